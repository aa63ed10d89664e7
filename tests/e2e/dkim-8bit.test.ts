// Signatures made by the relay stay valid whatever the next hop offers: an 8-bit message
// with a long line, from a client whose mail the relay signs, is put in 7-bit form with short
// lines before it is signed (smtp/signable.ts), so the hop without 8BITMIME gets the very
// bytes the hop with 8BITMIME gets, and mailauth verifies both against the test DNS (dnsmasq).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { dkimVerify } from "mailauth";
import { Resolver } from "../../src/dns/resolver.ts";
import { DnsServer } from "../helpers/dns.ts";
import { afterTrace, transact } from "../helpers/esmtp.ts";
import { BINARY, Relay, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";

let plain: Sink;
let full: Sink;
let relay: Relay;
let dns: DnsServer;
let resolver: Resolver;

beforeAll(async () => {
  plain = await Sink.start({ hide: ["8BITMIME", "SMTPUTF8", "DSN", "PIPELINING"] });
  full = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "plain.test": plain.route, "full.test": full.route } }, api: { listen: "127.0.0.1:0" } } });
  const keygen = await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--json", "--config", relay.configPath]);
  expect(keygen.code).toBe(0);
  const records = (JSON.parse(keygen.out) as { records: { name: string; value: string }[] }).records;
  dns = await DnsServer.start({ txt: Object.fromEntries(records.map((r) => [r.name, [r.value]])) });
  resolver = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 500, attempts: 1 });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([plain.close(), full.close(), dns.stop()]);
});

const text = "Grüße aus Köln: die Zahlen sind da.\r\n" + "ä".repeat(900) + "\r\n";

test("an 8-bit message with a long line: the same 7-bit bytes reach both hops, and both signatures verify at each", async () => {
  const message = Buffer.concat([
    Buffer.from("From: Alice <alice@corp.test>\r\nTo: bob@plain.test, carol@full.test\r\nSubject: signed 8bit\r\nMIME-Version: 1.0\r\n"),
    Buffer.from("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"),
    Buffer.from(text, "utf8"),
  ]);
  const reply = await transact(relay.port, { mail: "MAIL FROM:<alice@corp.test> BODY=8BITMIME", rcpts: ["RCPT TO:<bob@plain.test>", "RCPT TO:<carol@full.test>"], message });
  expect(reply.code).toBe(250);
  const atPlain = await waitFor(() => plain.messages.find((m) => m.raw.toString("latin1").includes("signed 8bit")), 10_000, "delivery to the plain hop");
  const atFull = await waitFor(() => full.messages.find((m) => m.raw.toString("latin1").includes("signed 8bit")), 10_000, "delivery to the full hop");

  // No conversion after signing: both hops got exactly the same bytes, 7-bit, short lines.
  expect(atPlain.raw.equals(atFull.raw)).toBe(true);
  const out = atPlain.raw.toString("latin1");
  expect(out).toMatch(/^[\x00-\x7f]*$/);
  for (const line of out.split("\r\n")) expect(line.length).toBeLessThanOrEqual(998);
  expect(afterTrace(atPlain.raw).toString("latin1")).toMatch(/^DKIM-Signature: /);
  expect(out).toContain("Content-Transfer-Encoding: quoted-printable\r\n");
  const body = out.slice(out.indexOf("\r\n\r\n") + 4);
  const decoded = Buffer.from(body.replace(/=\r\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), "latin1").toString("utf8");
  expect(decoded).toBe(text);

  for (const got of [atPlain, atFull]) {
    const results = (await dkimVerify(got.raw, { resolver: resolver.forMailauth as never })).results;
    expect(results.map((r) => [r.signingDomain, r.status.result]).sort()).toEqual([
      ["corp.test", "pass"],
      ["corp.test", "pass"],
    ]);
  }
});

test("a 7-bit message is signed and sent as it came", async () => {
  const message = Buffer.from("From: alice@corp.test\r\nSubject: signed 7bit\r\n\r\nplain\r\n");
  expect((await transact(relay.port, { mail: "MAIL FROM:<alice@corp.test>", rcpts: ["RCPT TO:<bob@plain.test>"], message })).code).toBe(250);
  const got = await waitFor(() => plain.messages.find((m) => m.raw.toString("latin1").includes("signed 7bit")), 10_000, "delivery");
  const after = afterTrace(got.raw).toString("latin1");
  // Our DKIM-Signature fields on top, then the client's message untouched.
  expect(after.replace(/^(DKIM-Signature:[^\r]*\r\n([ \t][^\r]*\r\n)*)+/, "")).toBe(message.toString("latin1"));
  expect((await dkimVerify(got.raw, { resolver: resolver.forMailauth as never })).results.map((r) => r.status.result)).toEqual(["pass", "pass"]);
});

test("a raw 8-bit message sent through the HTTP API is signed in 7-bit form and verifies after the hop without 8BITMIME", async () => {
  const add = await run([BINARY, "apikey", "add", "app", "--domain", "corp.test", "--json", "--config", relay.configPath]);
  expect(add.code).toBe(0);
  const token = (JSON.parse(add.out) as { token: string }).token;
  const apiPort = Number(relay.logs.find((l) => l.msg === "send api listening")!.port);
  const raw = Buffer.concat([Buffer.from("From: app@corp.test\r\nSubject: api 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"), Buffer.from(text, "utf8")]);
  const res = await fetch(`http://127.0.0.1:${apiPort}/api/v1/messages?from=app@corp.test&to=bob@plain.test`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "message/rfc822" },
    body: raw,
  });
  expect(res.status).toBe(202);
  const got = await waitFor(() => plain.messages.find((m) => m.raw.toString("latin1").includes("api 8bit")), 10_000, "delivery");
  expect(got.raw.toString("latin1")).toMatch(/^[\x00-\x7f]*$/);
  expect(got.raw.toString("latin1")).toContain("Content-Transfer-Encoding: quoted-printable\r\n");
  expect((await dkimVerify(got.raw, { resolver: resolver.forMailauth as never })).results.map((r) => r.status.result)).toEqual(["pass", "pass"]);
});
