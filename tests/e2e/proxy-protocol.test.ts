// Behind a real HAProxy (send-proxy-v2, round robin) two relays sharing a redis-server see the
// client's own address: in the Received: header and in the per-IP limits, though every
// connection comes from the balancer. A PROXY header from anyone but the balancer is refused,
// and the balancer must send one. Clients use several 127.0.0.x source addresses; the
// balancer (HAProxy connects from 127.0.0.1) is the only trusted peer.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DnsServer } from "../helpers/dns.ts";
import { HaProxy } from "../helpers/haproxy.ts";
import { metric } from "../helpers/observe.ts";
import { RedisServer } from "../helpers/redis.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let redis: RedisServer;
let sink: Sink;
let haproxy: HaProxy;
let dns: DnsServer;
let nodes: Relay[] = [];

beforeAll(async () => {
  redis = await RedisServer.start();
  sink = await Sink.start();
  // A DNS list that lists one client address (the balancer's, 127.0.0.1, is not listed).
  dns = await DnsServer.start({ a: { "61.0.0.127.zen.test": "127.0.0.2" } });
  const start = (name: string) =>
    Relay.start({
      config: {
        relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
        defenses: { rate_limits: { per_ip: "3/1h" }, dnsbl: { zones: ["zen.test"] } },
        dns: { servers: [dns.address], timeout: "2s" },
        smtp: { max_connections_per_ip: 2, command_timeout: "2s", proxy_protocol: { trusted: ["127.0.0.1/32"] } },
        cluster: { enabled: true, redis: redis.url, key_prefix: "proxy:", node_name: name },
      },
    });
  nodes = await Promise.all([start("a"), start("b")]);
  haproxy = await HaProxy.start(nodes.map((n) => n.port), "send-proxy-v2");
}, 60_000);

afterAll(async () => {
  await haproxy?.stop();
  await Promise.all(nodes.map(async (r) => (expect(await r.stop()).toBe(0), r.cleanup())));
  await sink.close();
  await redis.stop();
  await dns?.stop();
});

const viaBalancer = (from: string) => SmtpTalk.open(haproxy.port, { localAddress: from });

describe("through HAProxy with send-proxy-v2", () => {
  test("the client's address is in the Received: header, whichever node took the message", async () => {
    for (const [i, from] of ["127.0.0.21", "127.0.0.22"].entries()) {
      const { talk, greeting } = await viaBalancer(from);
      expect(greeting.code).toBe(220);
      await talk.send("EHLO client.test");
      expect((await talk.transaction("a@sender.test", ["bob@dest.test"], `Subject: proxied ${i}\r\n\r\nhi\r\n`)).code).toBe(250);
      talk.close();
    }
    const got = await waitFor(() => {
      const m = ["proxied 0", "proxied 1"].map((s) => sink.messages.find((x) => x.raw.toString().includes(`Subject: ${s}`)));
      return m.every(Boolean) ? m : null;
    }, 10_000, "both messages at the sink");
    expect(got[0]!.raw.toString()).toStartWith("Received: from client.test (unknown [127.0.0.21])");
    expect(got[1]!.raw.toString()).toStartWith("Received: from client.test (unknown [127.0.0.22])");
    // Round robin: each node took one, and logged the client, not the balancer.
    const accepted = nodes.map((n) => n.logs.filter((l) => l.msg === "message accepted").map((l) => l.client_ip));
    expect(accepted.flat().sort()).toEqual(["127.0.0.21", "127.0.0.22"]);
    expect(accepted.map((a) => a.length)).toEqual([1, 1]);
  }, 30_000);

  test("the per-IP message limit (3/1h, shared in Redis) counts the client, not the balancer", async () => {
    const mail = async (from: string) => {
      const { talk } = await viaBalancer(from);
      await talk.send("EHLO client.test");
      const r = await talk.send("MAIL FROM:<x@sender.test>");
      talk.close();
      return r;
    };
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await mail("127.0.0.31")).code);
    expect(codes).toEqual([250, 250, 250, 450]);
    expect((await mail("127.0.0.31")).text).toBe("4.7.1 Rate limit exceeded for [127.0.0.31], try again later");
    expect((await mail("127.0.0.32")).code).toBe(250);
  }, 30_000);

  test("the DNS list is asked about the client: a listed one is refused before the greeting, another is greeted", async () => {
    const listed = await viaBalancer("127.0.0.61");
    expect(`${listed.greeting.code} ${listed.greeting.text}`).toBe("554 5.7.1 Service unavailable; client [127.0.0.61] blocked using zen.test");
    listed.talk.close();
    const clean = await viaBalancer("127.0.0.62");
    expect(clean.greeting.code).toBe(220);
    clean.talk.close();
  }, 30_000);

  test("sessions per client (max_connections_per_ip: 2 per node) count the client, not the balancer", async () => {
    // Round robin: six sessions from one client are three per node; the third on each is refused.
    const open: SmtpTalk[] = [];
    const greetings: number[] = [];
    for (let i = 0; i < 6; i++) {
      const { talk, greeting } = await viaBalancer("127.0.0.41");
      open.push(talk);
      greetings.push(greeting.code);
    }
    expect(greetings.filter((c) => c === 220).length).toBe(4);
    expect(greetings.filter((c) => c === 421).length).toBe(2);
    // Another client behind the same balancer is not affected.
    const other = await viaBalancer("127.0.0.42");
    expect(other.greeting.code).toBe(220);
    for (const t of [...open, other.talk]) t.close();
  }, 30_000);
});

test("HAProxy's send-proxy (version 1) works the same way", async () => {
  const v1 = await HaProxy.start(nodes.map((n) => n.port), "send-proxy");
  try {
    const { talk, greeting } = await SmtpTalk.open(v1.port, { localAddress: "127.0.0.71" });
    expect(greeting.code).toBe(220);
    await talk.send("EHLO client.test");
    expect((await talk.transaction("a@sender.test", ["bob@dest.test"], "Subject: proxied v1\r\n\r\nhi\r\n")).code).toBe(250);
    talk.close();
    const m = await waitFor(() => sink.messages.find((x) => x.raw.toString().includes("Subject: proxied v1")), 10_000, "the message at the sink");
    expect(m.raw.toString()).toStartWith("Received: from client.test (unknown [127.0.0.71])");
  } finally {
    await v1.stop();
  }
}, 30_000);

describe("who may send a PROXY header", () => {
  test("v1 from a peer that is not the balancer: 554 5.7.0, the address in it is never used", async () => {
    const { talk, greeting } = await SmtpTalk.open(nodes[0]!.port, { localAddress: "127.0.0.51" });
    expect(greeting.code).toBe(220);
    const r = await talk.send("PROXY TCP4 203.0.113.9 127.0.0.1 40000 25");
    expect(`${r.code} ${r.text}`).toBe("554 5.7.0 PROXY protocol not accepted from this address");
    await talk.closed;
    expect(nodes[0]!.logs.some((l) => l.client_ip === "203.0.113.9")).toBe(false);
    expect(await metric(nodes[0]!, "mailraven_smtp_connections_rejected_total", { reason: "proxy_untrusted" })).toBeGreaterThanOrEqual(1);
  });

  test("v2 from a peer that is not the balancer: never read as a header (its signature ends in QUIT), the address never used", async () => {
    const { talk } = await SmtpTalk.open(nodes[1]!.port, { localAddress: "127.0.0.52" });
    const sig = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
    talk.write(Buffer.from([...sig, 0x21, 0x11, 0x00, 0x0c, 203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x00, 0x19, ...Buffer.from("EHLO spoof.test\r\nMAIL FROM:<a@b.test>\r\n")]));
    await talk.closed;
    expect(nodes[1]!.logs.some((l) => l.client_ip === "203.0.113.9")).toBe(false);
    expect(nodes[1]!.logs.some((l) => l.msg === "connect" && l.client_ip === "127.0.0.52")).toBe(true);
  });

  test("the balancer's address without a header: 421 and closed, nothing taken", async () => {
    const before = await metric(nodes[0]!, "mailraven_smtp_connections_rejected_total", { reason: "proxy_header" });
    const t = await SmtpTalk.connect(nodes[0]!.port, { localAddress: "127.0.0.1" });
    t.write("EHLO direct.test\r\n");
    const r = await t.reply();
    expect(`${r.code} ${r.text}`).toBe("421 4.7.0 PROXY protocol header required");
    await t.closed;
    // One that sends nothing is closed after command_timeout (2s here).
    const silent = await SmtpTalk.connect(nodes[0]!.port, { localAddress: "127.0.0.1" });
    const r2 = await silent.reply(10_000);
    expect(r2.code).toBe(421);
    await silent.closed;
    expect(await metric(nodes[0]!, "mailraven_smtp_connections_rejected_total", { reason: "proxy_header" })).toBe(before + 2);
  }, 20_000);
});
