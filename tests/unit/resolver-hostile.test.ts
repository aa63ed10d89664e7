// The stub resolver against a hostile DNS server on loopback, over real UDP and TCP sockets:
// replies with the wrong id, from another port, for another question, type or class, records
// for names nobody asked about, CNAME chains that leave the answer, and a TCP answer (after a
// truncated UDP one) that answers something else. Only the genuine answer may be believed.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { createServer, type Server } from "node:net";
import * as packet from "dns-packet";
import { Resolver } from "../../src/dns/resolver.ts";

type Query = ReturnType<typeof packet.decode>;
type Reply = Parameters<typeof packet.encode>[0];
/** What the server does with one query: datagrams to send back, each from the server's port or another one. */
type Behaviour = (q: Query) => { from: "server" | "elsewhere"; reply: Reply }[];

let udp: Socket;
let other: Socket;
let tcp: Server;
let port = 0;
let behaviour: Behaviour = () => [];
let tcpBehaviour: (q: Query) => Reply = (q) => answer(q, []);
const ids: number[] = [];

/** A response to `q` (same id and question unless overridden) with the given answer records. */
function answer(q: Query, answers: Reply["answers"], over: Partial<Reply> = {}): Reply {
  return { type: "response", id: q.id, flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE, questions: q.questions, answers, ...over };
}
const a = (name: string, data: string) => ({ type: "A" as const, name, ttl: 60, class: "IN" as const, data });

function startTcp(): Server {
  return createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const out = packet.encode(tcpBehaviour(packet.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)))));
      sock.end(Buffer.concat([Buffer.from([out.length >> 8, out.length & 0xff]), out]));
    });
    sock.on("error", () => {});
  });
}

beforeAll(async () => {
  other = createSocket("udp4");
  await new Promise<void>((r) => other.bind(0, "127.0.0.1", r));
  // The server's UDP port, and the same port over TCP for the retry after a truncated answer
  // (another free UDP port is tried when that TCP port is taken).
  for (let tries = 1; ; tries++) {
    udp = createSocket("udp4");
    udp.on("message", (msg: Buffer, rinfo: RemoteInfo) => {
      const q = packet.decode(msg);
      ids.push(q.id!);
      for (const { from, reply } of behaviour(q)) (from === "server" ? udp : other).send(packet.encode(reply), rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
    port = udp.address().port;
    tcp = startTcp();
    const listening = await new Promise<boolean>((r) => tcp.once("error", () => r(false)).listen(port, "127.0.0.1", () => r(true)));
    if (listening) break;
    await new Promise<void>((r) => udp.close(() => r()));
    if (tries === 5) throw new Error("no UDP port whose TCP twin was free");
  }
});
afterAll(async () => {
  await new Promise<void>((r) => udp.close(() => r()));
  await new Promise<void>((r) => other.close(() => r()));
  await new Promise<void>((r) => tcp.close(() => r()));
});
afterEach(() => {
  behaviour = () => [];
});

const resolver = () => new Resolver({ servers: [{ host: "127.0.0.1", port }], timeoutMs: 400, attempts: 1 });
const poisoned = (q: Query) => answer(q, [a(q.questions![0]!.name, "6.6.6.6")]);
const genuine = (q: Query) => answer(q, [a(q.questions![0]!.name, "192.0.2.1")]);

describe("UDP replies that are not the answer are ignored, and the real one still counts", () => {
  test("a reply with another id", async () => {
    behaviour = (q) => [{ from: "server", reply: { ...poisoned(q), id: (q.id! + 1) & 0xffff } }, { from: "server", reply: genuine(q) }];
    expect((await resolver().a("www.hostile.test")).records).toEqual(["192.0.2.1"]);
  });

  test("a reply with the right id from another port (an off-path spoofer)", async () => {
    behaviour = (q) => [{ from: "elsewhere", reply: poisoned(q) }, { from: "server", reply: genuine(q) }];
    expect((await resolver().a("www.hostile.test")).records).toEqual(["192.0.2.1"]);
  });

  test.each([
    ["another name", (q: Query) => ({ ...poisoned(q), questions: [{ type: "A" as const, name: "evil.test", class: "IN" as const }] })],
    ["another type", (q: Query) => ({ ...poisoned(q), questions: [{ type: "AAAA" as const, name: q.questions![0]!.name, class: "IN" as const }] })],
    ["another class", (q: Query) => ({ ...poisoned(q), questions: [{ type: "A" as const, name: q.questions![0]!.name, class: "CH" as const }] })],
    ["no question", (q: Query) => ({ ...poisoned(q), questions: [] })],
    ["a query, not a response", (q: Query) => ({ ...poisoned(q), type: "query" as const })],
  ])("a reply for %s", async (_what, bad) => {
    behaviour = (q) => [{ from: "server", reply: bad(q) }, { from: "server", reply: genuine(q) }];
    expect((await resolver().a("www.hostile.test")).records).toEqual(["192.0.2.1"]);
  });

  test("only bad replies: the lookup times out rather than believing one", async () => {
    behaviour = (q) => [
      { from: "server", reply: { ...poisoned(q), id: (q.id! + 1) & 0xffff } },
      { from: "elsewhere", reply: poisoned(q) },
    ];
    await expect(resolver().a("www.hostile.test")).rejects.toMatchObject({ code: "ETIMEOUT" });
  });

  test("the question name in another case is the same name (RFC 4343)", async () => {
    behaviour = (q) => [{ from: "server", reply: answer(q, [a("WWW.Hostile.TEST", "192.0.2.7")], { questions: [{ type: "A", name: "WWW.HOSTILE.test", class: "IN" }] }) }];
    expect((await resolver().a("www.hostile.test")).records).toEqual(["192.0.2.7"]);
  });

  test("transaction ids are random (50 queries, no repeats expected)", async () => {
    behaviour = (q) => [{ from: "server", reply: genuine(q) }];
    ids.length = 0;
    const r = resolver();
    for (let i = 0; i < 50; i++) await r.a(`n${i}.hostile.test`);
    expect(new Set(ids).size).toBeGreaterThanOrEqual(48);
    const steps = new Set(ids.slice(1).map((id, i) => (id - ids[i]! + 65536) % 65536));
    expect(steps.size).toBeGreaterThan(40); // not a counter
  });
});

describe("records in the answer", () => {
  test("records for other names are dropped", async () => {
    behaviour = (q) => [{ from: "server", reply: answer(q, [a("bank.test", "6.6.6.6"), a("www.hostile.test", "192.0.2.1")]) }];
    expect((await resolver().a("www.hostile.test")).records).toEqual(["192.0.2.1"]);
  });

  test("only records for other names: no data", async () => {
    behaviour = (q) => [{ from: "server", reply: answer(q, [a("bank.test", "6.6.6.6")]) }];
    await expect(resolver().a("www.hostile.test")).rejects.toMatchObject({ code: "ENODATA" });
  });

  test("a CNAME chain from the asked name is followed within the answer, and nothing beside it is taken", async () => {
    behaviour = (q) => [
      {
        from: "server",
        reply: answer(q, [
          { type: "CNAME", name: "www.hostile.test", ttl: 60, class: "IN", data: "edge.cdn.test" },
          { type: "CNAME", name: "edge.cdn.test", ttl: 30, class: "IN", data: "host.cdn.test" },
          a("host.cdn.test", "192.0.2.9"),
          a("unrelated.test", "6.6.6.6"),
        ]),
      },
    ];
    expect(await resolver().a("www.hostile.test")).toEqual({ records: ["192.0.2.9"], ttl: 60 });
  });

  test("a CNAME that does not start at the asked name is not followed", async () => {
    behaviour = (q) => [
      {
        from: "server",
        reply: answer(q, [{ type: "CNAME", name: "other.hostile.test", ttl: 60, class: "IN", data: "bank.test" }, a("bank.test", "6.6.6.6")]),
      },
    ];
    await expect(resolver().a("www.hostile.test")).rejects.toMatchObject({ code: "ENODATA" });
  });

  test("a CNAME loop ends as no data", async () => {
    behaviour = (q) => [
      {
        from: "server",
        reply: answer(q, [
          { type: "CNAME", name: "www.hostile.test", ttl: 60, class: "IN", data: "loop.hostile.test" },
          { type: "CNAME", name: "loop.hostile.test", ttl: 60, class: "IN", data: "www.hostile.test" },
        ]),
      },
    ];
    await expect(resolver().a("www.hostile.test")).rejects.toMatchObject({ code: "ENODATA" });
  });
});

describe("TCP after a truncated UDP answer", () => {
  const truncated = (q: Query) => [{ from: "server" as const, reply: answer(q, [], { flags: packet.TRUNCATED_RESPONSE }) }];

  test("the genuine TCP answer is used", async () => {
    behaviour = truncated;
    tcpBehaviour = (q) => answer(q, [a("big.hostile.test", "192.0.2.44"), a("bank.test", "6.6.6.6")]);
    expect((await resolver().a("big.hostile.test")).records).toEqual(["192.0.2.44"]);
  });

  test.each([
    ["another id", (q: Query) => ({ ...genuine(q), id: (q.id! + 1) & 0xffff })],
    ["another name", (q: Query) => ({ ...genuine(q), questions: [{ type: "A" as const, name: "bank.test", class: "IN" as const }] })],
    ["another type", (q: Query) => ({ ...genuine(q), questions: [{ type: "TXT" as const, name: q.questions![0]!.name, class: "IN" as const }] })],
  ])("a TCP answer with %s is a bad response", async (_what, bad) => {
    behaviour = truncated;
    tcpBehaviour = bad;
    await expect(resolver().a("big.hostile.test")).rejects.toMatchObject({ code: "EBADRESP" });
  });
});
