// The HTTP send API: keys, JSON and raw messages, validation, and delivery through the queue.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BINARY, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { run as exec } from "../helpers/run.ts";

let sink: Sink;
let relay: Relay;
let port = 0;
let token = "";
let limitedToken = "";

const cli = (...args: string[]) => exec([BINARY, ...args, "--config", relay.configPath]);

const send = (body: unknown, key = token, contentType = "application/json", query = "") =>
  fetch(`http://127.0.0.1:${port}/api/v1/messages${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": contentType },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

async function error(res: Response): Promise<{ code: string; message: string }> {
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] }, api: { listen: "127.0.0.1:0" } } });
  port = Number(relay.logs.find((l) => l.msg === "send api listening")!.port);
  const add = await cli("apikey", "add", "billing", "--domain", "corp.test", "--json");
  expect(add.code).toBe(0);
  token = (JSON.parse(add.out) as { token: string }).token;
  expect(token).toMatch(/^mrk_[\w-]{8}_[\w-]{43}$/);
  limitedToken = (JSON.parse((await cli("apikey", "add", "limited", "--domain", "corp.test", "--rate", "1/1h", "--json")).out) as { token: string }).token;
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

describe("POST /api/v1/messages", () => {
  test("a JSON message with cc, bcc and an attachment is queued (202) and delivered; Bcc is not in the headers", async () => {
    const res = await send({
      from: "Billing <billing@corp.test>",
      to: ["alice@dest.test"],
      cc: ["carol@dest.test"],
      bcc: ["hidden@dest.test"],
      subject: "Invoice 42",
      text: "Please find the invoice attached.",
      attachments: [{ filename: "invoice.txt", content: btoa("total: 42 EUR"), content_type: "text/plain" }],
      headers: { "X-Invoice": "42" },
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { id: string; recipients: number };
    expect(body.recipients).toBe(3);
    const got = await waitFor(() => sink.messages.find((m) => m.raw.includes("Invoice 42")), 10_000, "delivery");
    expect(got.from).toBe("billing@corp.test");
    expect(got.to.sort()).toEqual(["alice@dest.test", "carol@dest.test", "hidden@dest.test"]);
    const raw = got.raw.toString();
    expect(raw).toContain(`with HTTP id ${body.id}`);
    expect(raw).toContain("X-Invoice: 42");
    expect(raw).toContain("dG90YWw6IDQyIEVVUg==");
    expect(raw).not.toMatch(/^Bcc:/im);
    expect(raw).not.toContain("hidden@dest.test");
  });

  test("a raw message with its envelope in the query", async () => {
    const raw = "From: ops@corp.test\r\nTo: alice@dest.test\r\nSubject: raw one\r\n\r\nraw body\r\n";
    const res = await send(raw, token, "message/rfc822", "?from=ops@corp.test&to=alice@dest.test");
    expect(res.status).toBe(202);
    await waitFor(() => sink.messages.find((m) => m.raw.includes("raw one")), 10_000, "delivery");
  });

  test("no key, a wrong key: 401 with WWW-Authenticate", async () => {
    for (const key of ["", "mrk_AAAAAAAA_" + "B".repeat(43), token.slice(0, -1) + (token.endsWith("A") ? "B" : "A")]) {
      const res = await send({ from: "a@corp.test", to: ["b@dest.test"] }, key);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain("Bearer");
      expect((await error(res)).code).toBe("unauthorized");
    }
  });

  test("sending as another domain is 403, in the envelope or the From: header", async () => {
    expect((await error(await send({ from: "ceo@other.test", to: ["b@dest.test"], text: "x" }))).code).toBe("sender_not_allowed");
    const raw = "From: ceo@other.test\r\nSubject: x\r\n\r\nx\r\n";
    const res = await send(raw, token, "message/rfc822", "?from=ops@corp.test&to=b@dest.test");
    expect(res.status).toBe(403);
  });

  test("raw messages: a foreign author however the header is spelt is 403; several From: are 400; an own Sender: passes", async () => {
    const raw = (head: string) => send(`${head}\r\nTo: b@dest.test\r\nSubject: x\r\n\r\nx\r\n`, token, "message/rfc822", "?from=ops@corp.test&to=b@dest.test");
    const refused: [string, number, string][] = [
      ["From : ceo@other.test", 403, "sender_not_allowed"], // space before the colon
      ["From\r\n : ceo@other.test", 403, "sender_not_allowed"], // folded before the colon
      ["from:\r\n\tCEO\r\n <ceo@other.test>", 403, "sender_not_allowed"], // folded value, lower-case name
      ["From: =?utf-8?Q?ceo=40other.test?=", 403, "sender_not_allowed"], // the address in an encoded word
      ["From: board: ceo@other.test;", 403, "sender_not_allowed"], // a group
      ["From: ops@corp.test\r\nSender: ceo@other.test", 403, "sender_not_allowed"],
      ["From: ops@corp.test\r\nResent-From: ceo@other.test", 403, "sender_not_allowed"],
      ["From: ops@corp.test\r\nFrom: ceo@other.test", 400, "bad_message"],
      ["From: ops@corp.test, ceo@other.test", 400, "bad_message"],
      ["From: ops@corp.test, sales@corp.test", 400, "bad_message"],
      ["From: undisclosed:;", 400, "bad_message"],
    ];
    for (const [head, status, code] of refused) {
      const res = await raw(head);
      expect({ head, status: res.status, code: (await error(res)).code }).toEqual({ head, status, code });
    }
    const own = await raw("From: =?utf-8?Q?Op=C3=A9rations?= <ops@corp.test>\r\nSender: billing@corp.test\r\nResent-From: ops@corp.test");
    expect(own.status).toBe(202);
  });

  test("malformed requests are 400s naming the problem; header injection is refused", async () => {
    const cases: [unknown, string][] = [
      ["{not json", "bad_json"],
      [{ from: "a@corp.test", to: [] }, "no_recipients"],
      [{ from: "a@corp.test", to: ["not an address"] }, "bad_address"],
      [{ from: "a@corp.test", to: ["b@dest.test"], subject: "hi\r\nBcc: victim@dest.test" }, "bad_field"],
      [{ from: "a@corp.test", to: ["b@dest.test"], headers: { "X-A": "1\r\nBcc: victim@dest.test" } }, "bad_header"],
      [{ from: "a@corp.test", to: ["b@dest.test"], headers: { Bcc: "victim@dest.test" } }, "bad_header"],
      [{ from: "a@corp.test", to: ["b@dest.test"], surprise: 1 }, "unknown_field"],
      [{ from: "a@corp.test", to: ["b@nowhere.test"] }, "no_route"],
    ];
    for (const [body, code] of cases) {
      const res = await send(body);
      expect(res.status).toBe(400);
      expect((await error(res)).code).toBe(code);
    }
    expect((await send("hello", token, "text/plain")).status).toBe(415);
  });

  test("a key over its rate gets 429 with Retry-After", async () => {
    expect((await send({ from: "a@corp.test", to: ["b@dest.test"], text: "1" }, limitedToken)).status).toBe(202);
    const res = await send({ from: "a@corp.test", to: ["b@dest.test"], text: "2" }, limitedToken);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  test("keys are listed without secrets and can be removed", async () => {
    const ls = await cli("apikey", "ls", "--json");
    const keys = JSON.parse(ls.out) as { id: string; name: string }[];
    expect(keys.map((k) => k.name)).toEqual(["billing", "limited"]);
    // The token is mrk_<8-character id>_<43-character secret>; the id may itself contain "_".
    expect(ls.out).not.toContain(token.slice(-43));
    const id = keys.find((k) => k.name === "limited")!.id;
    expect((await cli("apikey", "rm", id)).code).toBe(0);
    expect((await send({ from: "a@corp.test", to: ["b@dest.test"], text: "3" }, limitedToken)).status).toBe(401);
  });
});
