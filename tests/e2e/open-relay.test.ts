// Never an open relay: every addressing trick from an untrusted client is refused at RCPT,
// and nothing reaches a next hop. The relay has a smarthost, as an edge relay usually has for
// its outbound mail, so a recipient wrongly accepted would really be relayed: to `internet`.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { canaryThrough } from "../helpers/canary.ts";
import { Relay } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let internet: Sink;
let relay: Relay;
let noSmarthost: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  internet = await Sink.start();
  // Only 127.0.0.2 is trusted, so 127.0.0.1 plays the internet.
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"], smarthost: internet.route } } });
  noSmarthost = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] } } });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, noSmarthost]) {
    await r?.stop();
    r?.cleanup();
  }
  await sink?.close();
  await internet?.close();
}, 60_000);

/** MAIL, RCPT, and then DATA with a message whatever RCPT said: the RCPT reply and the end-of-data reply (or DATA's refusal). */
async function rcpt(address: string, from = "127.0.0.1", target = relay) {
  const { talk } = await SmtpTalk.open(target.port, { localAddress: from });
  await talk.send("EHLO attacker.test");
  expect((await talk.send("MAIL FROM:<spammer@attacker.test> SMTPUTF8")).code).toBe(250);
  const r = await talk.send(`RCPT TO:<${address}>`);
  const data = await talk.send("DATA");
  const final = data.code === 354 ? (talk.write(`Subject: relay test for ${address}\r\n\r\nspam\r\n.\r\n`), await talk.reply()) : data;
  talk.close();
  if (r.code >= 400) expect(data.code).toBeGreaterThanOrEqual(500); // no valid recipient: DATA refused
  return Object.assign(r, { final });
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
    // A subdomain of a relayed domain is another domain.
    "victim@sub.dest.test",
    "victim@SUB.DEST.TEST",
    "victim@a.b.dest.test",
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
      expect(r.final.code).toBe(250);
    });
  }

  test("nothing was relayed: a canary sent after the attempts arrives, the queue is empty, only our domain got mail", async () => {
    await canaryThrough(relay, sink);
    expect(internet.messages).toHaveLength(0);
    // The accepted-domain tests above sent their DATA too; nothing else reached our next hop.
    expect(sink.messages.flatMap((m) => m.to).map((a) => a.toLowerCase()).every((a) => a === "bob@dest.test")).toBe(true);
    expect(sink.messages).toHaveLength(3);
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
    const r = await rcpt("victim@elsewhere.test", "127.0.0.2", noSmarthost);
    expect(r.code).toBe(550);
    expect(r.text).toStartWith("5.4.4 ");
  });
});
