// The client allowlists over real sockets, each next to a client it does not cover:
//   defenses.allowlist          spared every defense (DNS lists, connection rate, greeting
//                               delay, rate limits, greylisting), but not given relaying rights
//   smtp.greeting_allowlist     greeted at once; every other defense still applies
//   greylist allow_clients / allow_senders / allow_recipients   not greylisted, nothing more
// 127.0.0.0/8 plays the internet (relay_networks is a network no client here uses); the DNS
// list (dnsmasq) lists 127.0.0.81, .82 and .83.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DnsServer } from "../helpers/dns.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const DELAY_MS = 1500;
let dns: DnsServer;
let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  dns = await DnsServer.start({ a: { "81.0.0.127.bl.test": "127.0.0.2", "82.0.0.127.bl.test": "127.0.0.2", "83.0.0.127.bl.test": "127.0.0.2" } });
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
      dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
      smtp: { greeting_delay: `${DELAY_MS}ms`, greeting_allowlist: ["127.0.0.82/32", "127.0.0.89/32"] },
      defenses: {
        allowlist: ["127.0.0.81/32"],
        dnsbl: { zones: ["bl.test"], threshold: 1 },
        connection_rate: 3,
        rate_limits: { per_ip: "2/1h" },
        greylist: { delay: "1h", allow_clients: ["127.0.0.84/32", "127.0.0.90/32"], allow_senders: ["partner.test"], allow_recipients: ["postmaster@dest.test"] },
      },
    },
  });
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await sink?.close();
  await dns?.stop();
}, 60_000);

/** Connects from `ip`; the greeting and how long it took. */
async function greet(ip: string) {
  const t0 = Date.now();
  const { talk, greeting } = await SmtpTalk.open(relay.port, { localAddress: ip });
  return { talk, greeting, ms: Date.now() - t0 };
}

/** MAIL and RCPT from `ip`: the RCPT reply (the session is closed). */
async function rcpt(ip: string, from: string, to = "bob@dest.test") {
  const { talk, greeting } = await greet(ip);
  expect(greeting.code).toBe(220);
  await talk.send("EHLO client.test");
  expect((await talk.send(`MAIL FROM:<${from}>`)).code).toBe(250);
  const r = await talk.send(`RCPT TO:<${to}>`);
  talk.close();
  return r;
}

describe("defenses.allowlist", () => {
  test("a listed client on the allowlist is greeted at once, and a listed one off it is refused", async () => {
    const spared = await greet("127.0.0.81");
    expect(spared.greeting.code).toBe(220);
    expect(spared.ms).toBeLessThan(DELAY_MS / 2);
    spared.talk.close();
    const listed = await greet("127.0.0.83");
    expect(listed.greeting.code).toBe(554);
    expect(listed.greeting.text).toBe("5.7.1 Service unavailable; client [127.0.0.83] blocked using bl.test");
    listed.talk.close();
  }, 30_000);

  test("no connection rate, rate limit or greylisting for it; mail is accepted and delivered", async () => {
    const { talk } = await greet("127.0.0.81");
    await talk.send("EHLO partner-relay.test");
    for (let i = 0; i < 4; i++) {
      const r = await talk.transaction(`n${i}@somewhere.test`, ["bob@dest.test"], `Subject: allowlisted ${i}\r\n\r\nx\r\n`);
      expect(`${r.code} ${r.text}`).toMatch(/^250 /);
    }
    talk.close();
    for (let i = 0; i < 4; i++) (await greet("127.0.0.81")).talk.close(); // past connection_rate: 3
    const again = await greet("127.0.0.81");
    expect(again.greeting.code).toBe(220);
    again.talk.close();
    await waitFor(() => sink.messages.filter((m) => m.raw.includes("Subject: allowlisted")).length === 4, 10_000, "the four messages at the next hop");
  }, 30_000);

  test("it gives no relaying rights: other domains are still 554 5.7.1", async () => {
    const r = await rcpt("127.0.0.81", "a@somewhere.test", "victim@elsewhere.test");
    expect(r.code).toBe(554);
    expect(r.text).toBe("5.7.1 Relaying denied");
  }, 30_000);
});

describe("smtp.greeting_allowlist", () => {
  test("greeted at once where an unknown client waits for the delay", async () => {
    const known = await greet("127.0.0.89");
    const unknown = await greet("127.0.0.85");
    expect(known.greeting.code).toBe(220);
    expect(unknown.greeting.code).toBe(220);
    expect(known.ms).toBeLessThan(DELAY_MS / 2);
    expect(unknown.ms).toBeGreaterThanOrEqual(DELAY_MS - 50);
    known.talk.close();
    unknown.talk.close();
  }, 30_000);

  test("only the greeting: it is still greylisted, and a listed client on it is still refused by the DNS list", async () => {
    const r = await rcpt("127.0.0.89", "x@somewhere.test");
    expect(r.code).toBe(451);
    expect(r.text).toStartWith("4.7.1 Greylisted");
    const listed = await greet("127.0.0.82");
    expect(listed.greeting.code).toBe(554);
    listed.talk.close();
  }, 30_000);
});

describe("greylist allowlists", () => {
  test("allow_clients: its RCPT passes at once; a neighbour outside it is greylisted", async () => {
    expect((await rcpt("127.0.0.84", "y@somewhere.test")).code).toBe(250);
    expect((await rcpt("127.0.0.86", "y@somewhere.test")).code).toBe(451);
  }, 30_000);

  test("allow_senders: a sender in partner.test passes at once; another sender from the same client waits", async () => {
    expect((await rcpt("127.0.0.87", "news@partner.test")).code).toBe(250);
    expect((await rcpt("127.0.0.87", "news@stranger.test")).code).toBe(451);
  }, 30_000);

  test("allow_recipients: postmaster@dest.test passes at once, bob@dest.test waits", async () => {
    expect((await rcpt("127.0.0.88", "z@somewhere.test", "postmaster@dest.test")).code).toBe(250);
    expect((await rcpt("127.0.0.88", "z@somewhere.test", "bob@dest.test")).code).toBe(451);
  }, 30_000);

  test("greylisting allowlists spare nothing else: allow_clients still meets the rate limit", async () => {
    const { talk } = await greet("127.0.0.90");
    await talk.send("EHLO client.test");
    for (let i = 0; i < 2; i++) expect((await talk.transaction(`r${i}@somewhere.test`, ["bob@dest.test"], "Subject: r\r\n\r\nx\r\n")).code).toBe(250);
    const third = await talk.send("MAIL FROM:<r2@somewhere.test>");
    expect(third.code).toBe(450);
    expect(third.text).toStartWith("4.7.1 Rate limit exceeded");
    talk.close();
  }, 30_000);
});
