// Never an open relay: every addressing trick from an untrusted client is refused at RCPT,
// and nothing reaches a next hop.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Relay } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  // Only 127.0.0.2 is trusted, so 127.0.0.1 plays the internet.
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] } } });
});
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
});

async function rcpt(address: string, from = "127.0.0.1") {
  const { talk } = await SmtpTalk.open(relay.port, { localAddress: from });
  await talk.send("EHLO attacker.test");
  expect((await talk.send("MAIL FROM:<spammer@attacker.test> SMTPUTF8")).code).toBe(250);
  const r = await talk.send(`RCPT TO:<${address}>`);
  talk.close();
  return r;
}

describe("relay policy for untrusted clients", () => {
  const denied = [
    "victim@elsewhere.test",
    "victim@ELSEWHERE.test",
    "@dest.test:victim@elsewhere.test",
    "@dest.test,@dest.test:victim@elsewhere.test",
    "victim%elsewhere.test@dest.test",
    "elsewhere.test!victim@dest.test",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@dest.test.elsewhere.test",
    "victim@xn--dest-test-elsewhere.test",
    "victim@dést.test",
  ];
  for (const address of denied) {
    test(`RCPT TO:<${address}> -> 554 5.7.1 Relaying denied`, async () => {
      const r = await rcpt(address);
      expect(r.code).toBe(554);
      expect(r.text).toBe("5.7.1 Relaying denied");
    });
  }

  // RFC 5321 4.1.2: a domain has no trailing dot, so "x@dest.test." is a syntax error too.
  const malformed = ["victim@elsewhere.test.", "bob@dest.test.", '"victim@elsewhere.test"@dest.test', "victim@elsewhere.test@dest.test", "victim", "<victim@elsewhere.test>"];
  for (const address of malformed) {
    test(`RCPT TO:<${address}> is refused as a syntax error`, async () => {
      const r = await rcpt(address);
      expect(r.code).toBeGreaterThanOrEqual(500);
      expect(r.code).toBeLessThan(600);
      expect(r.code).not.toBe(554);
    });
  }

  for (const address of ["bob@dest.test", "Bob@DEST.TEST"]) {
    test(`RCPT TO:<${address}> (our domain) is accepted`, async () => {
      const r = await rcpt(address);
      expect(r.code).toBe(250);
    });
  }

  test("nothing was relayed to the next hop", () => {
    expect(sink.messages).toHaveLength(0);
  });

  test("refusals are logged with the reason", async () => {
    const line = await relay.waitForLog((l) => l.msg === "rcpt refused" && l.rcpt === "victim%elsewhere.test@dest.test");
    expect(line).toMatchObject({ code: 554, status: "5.7.1", reason: "routing syntax in local part", client_ip: "127.0.0.1" });
  });
});

describe("trusted clients (relay_networks)", () => {
  test("may use routing syntax in our domain", async () => {
    expect((await rcpt("list%sub@dest.test", "127.0.0.2")).code).toBe(250);
  });
  test("other domains without a smarthost: 550 5.4.4, not relayed", async () => {
    const r = await rcpt("victim@elsewhere.test", "127.0.0.2");
    expect(r.code).toBe(550);
    expect(r.text).toStartWith("5.4.4 ");
  });
});
