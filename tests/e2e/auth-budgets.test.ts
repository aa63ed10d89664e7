// Sender authentication within its budgets, through the compiled relay over real sockets, with
// real DNS: a message with 1,000 DKIM signatures (each a different l=) and a 2 MiB body, an 8 MiB
// header section without an empty line (three at once), and 20 signatures whose keys live in a
// zone that never answers (the relay's resolver is a UDP socket that reads and never replies).
// Each is answered within the deadline and the relay's memory (VmRSS) grows within a bound.
// Then the limits themselves, on the check directly: the bottom-most signatures are the ones
// verified, the rest and long ARC chains are reported as not checked.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { dkimSign } from "mailauth";
import { authenticationCheck } from "../../src/checks/content/authentication.ts";
import type { ContentContext } from "../../src/checks/types.ts";
import { Resolver } from "../../src/dns/resolver.ts";
import { parseMailbox } from "../../src/smtp/address.ts";
import { BlackholeDns, DnsServer } from "../helpers/dns.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk, type Reply } from "../helpers/smtp-talk.ts";
import { metric } from "../helpers/observe.ts";

const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const KEY_RECORD = `v=DKIM1; k=rsa; p=${publicKey.export({ type: "spki", format: "der" }).toString("base64")}`;
const PRIVATE_PEM = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
/** RSS growth allowed for the whole attack on one relay: generous, the unbounded case took 400 MB per message. */
const RSS_BOUND_KIB = 150 * 1024;

let dns: DnsServer;
let blackhole: BlackholeDns;
let sink: Sink;
const relays: Relay[] = [];

beforeAll(async () => {
  dns = await DnsServer.start({ txt: { "selector._domainkey.origin.test": [KEY_RECORD], "origin.test": ["v=spf1 -all"] } });
  blackhole = await BlackholeDns.start();
  sink = await Sink.start();
});
afterAll(async () => {
  for (const r of relays) {
    expect(await r.stop()).toBe(0);
    r.cleanup();
  }
  await sink.close();
  await dns.stop();
  await blackhole.stop();
}, 30_000);

async function relayWith(dnsServer: string, authentication: Record<string, unknown> = {}): Promise<Relay> {
  const relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
      smtp: { shutdown_timeout: "1s" },
      defenses: { connection_rate: 0, authentication },
      dns: { servers: [dnsServer], timeout: "2s", attempts: 2 },
    },
  });
  relays.push(relay);
  return relay;
}

const vmRssKiB = (pid: number) => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);


/** One message over SMTP; the final reply, read within `withinMs` of the end of the data. */
async function sendRaw(relay: Relay, data: Buffer, withinMs: number): Promise<Reply> {
  const { talk } = await SmtpTalk.open(relay.port);
  try {
    await talk.send("EHLO client.test");
    expect((await talk.send("MAIL FROM:<mallory@attacker.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
    expect((await talk.send("DATA")).code).toBe(354);
    talk.write(data);
    talk.write(".\r\n");
    return await talk.reply(withinMs);
  } finally {
    talk.close();
  }
}

const BODY_2MIB = Buffer.from("The quarterly numbers are attached below.\r\n".repeat(50_000));
const sig = (i: number, d = `d${i}.attacker.test`) =>
  `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${d}; s=s${i}; l=${i * 997}; h=from:to:subject; bh=${Buffer.from(`bh${i}`).toString("base64")}; b=${Buffer.from(`sig${i}`).toString("base64")}\r\n`;
const headers = (sigs: string) => `${sigs}From: mallory@attacker.test\r\nTo: bob@dest.test\r\nSubject: numbers\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@attacker.test>\r\n\r\n`;

describe("attacks on the relay, over SMTP", () => {
  test("1,000 DKIM signatures with different l= over a 2 MiB body: answered in time, 5 verified, the rest reported", async () => {
    const relay = await relayWith(dns.address);
    const before = vmRssKiB(relay.proc.pid);
    const data = Buffer.concat([Buffer.from(headers(Array.from({ length: 1000 }, (_, i) => sig(i + 1)).join(""))), BODY_2MIB]);
    const reply = await sendRaw(relay, data, 10_000);
    expect(reply.code).toBe(250);
    const got = await waitForMessage("numbers");
    const ar = authResults(got);
    expect(ar.match(/dkim=fail/g)).toHaveLength(5);
    expect(ar).toContain("dkim=neutral (995 more DKIM signatures not checked: limit of 5 per message)");
    // The bottom-most five are the ones checked.
    expect(ar).toContain("header.d=d1000.attacker.test");
    expect(ar).not.toContain("header.d=d1.attacker.test ");
    expect(await metric(relay, "mailraven_sender_auth_limits_total", { limit: "dkim_signatures" })).toBe(1);
    expect(vmRssKiB(relay.proc.pid) - before).toBeLessThan(RSS_BOUND_KIB);
  }, 30_000);

  test("three 8 MiB header sections without an empty line at once: each answered in time, memory bounded", async () => {
    const relay = await relayWith(dns.address);
    const before = vmRssKiB(relay.proc.pid);
    const junk = Buffer.from("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(100_000)); // 8.1 MB
    const replies = await Promise.all([0, 1, 2].map(() => sendRaw(relay, junk, 10_000)));
    // Refused outright (a header section over the limit), or deferred as not checkable under the
    // default temp_error: defer; never accepted unchecked as if it had passed.
    for (const r of replies) expect(r.code === 451 || r.code >= 500).toBe(true);
    expect(vmRssKiB(relay.proc.pid) - before).toBeLessThan(RSS_BOUND_KIB);
  }, 60_000);

  test("20 signatures whose keys never resolve: the reply comes at the deadline, as a DNS failure under temp_error", async () => {
    const relay = await relayWith(blackhole.address, { timeout: "3s" });
    const data = Buffer.concat([Buffer.from(headers(Array.from({ length: 20 }, (_, i) => sig(i + 1, "blackholed.test")).join("").replace(/bh=[^;]+/g, "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").replace(/l=\d+; /g, ""))), Buffer.alloc(0)]);
    const reply = await sendRaw(relay, data, 3000 + 2000);
    expect(reply.code).toBe(451);
    expect(reply.text).toBe("4.7.5 Sender authentication could not be completed, try again later");
    expect(await metric(relay, "mailraven_sender_auth_limits_total", { limit: "deadline" })).toBe(1);
    await relay.waitForLog((l) => l.msg.startsWith("sender authentication not finished in time"));
  }, 20_000);

  test("the same with temp_error: accept: delivered, with a header saying nothing was checked", async () => {
    const relay = await relayWith(blackhole.address, { timeout: "2s", temp_error: "accept" });
    const data = Buffer.from(headers(Array.from({ length: 20 }, (_, i) => sig(i + 1, "blackholed.test")).join("")).replace("Subject: numbers", "Subject: accepted late"));
    expect((await sendRaw(relay, data, 2000 + 2000)).code).toBe(250);
    expect(authResults(await waitForMessage("accepted late"))).toBe("Authentication-Results: relay.test; (not checked: not finished within 2 s) none");
  }, 20_000);
});

async function waitForMessage(subject: string): Promise<string> {
  const m = await waitFor(() => sink.messages.find((x) => x.raw.toString("latin1").includes(`Subject: ${subject}`)), 10_000, `the message "${subject}" at the sink`);
  return m.raw.toString("latin1");
}

const authResults = (raw: string) => /^Authentication-Results:.*(?:\r\n[ \t].*)*/m.exec(raw)?.[0] ?? "";

describe("the limits, on the check itself", () => {
  let resolver: Resolver;
  beforeAll(() => {
    resolver = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 500, attempts: 1 });
  });

  const ctx = (message: string): ContentContext => ({
    client: { ip: "127.0.0.1", port: 40000, hostname: "", helo: "mail.origin.test", secure: false, trusted: false, user: null },
    sender: "alice@origin.test",
    recipients: [parseMailbox("bob@dest.test")!],
    localDomains: ["dest.test"],
    message: () => Readable.from(Buffer.from(message, "latin1")),
    size: message.length,
    head: message.slice(0, message.indexOf("\r\n\r\n") + 4),
  });
  const check = (limits = { maxDkimSignatures: 2, maxArcSets: 2, timeoutMs: 5000 }) =>
    authenticationCheck({ authservId: "mx.dest.test", resolver: resolver.forMailauth, policy: () => ({ spfFail: "tag", dmarcReject: true, tempError: "defer" }), onError: () => {}, limits });

  test("the bottom-most max_dkim_signatures signatures are verified (the original signer's), the rest reported as not checked", async () => {
    const msg = "From: alice@origin.test\r\nTo: bob@dest.test\r\nSubject: limits\r\n\r\nHello\r\n";
    const key = { signingDomain: "origin.test", selector: "selector", privateKey: PRIVATE_PEM };
    const real = (await dkimSign(msg, { ...key, signatureData: [key] })).signatures;
    // Newer hops added three more (bogus) signatures on top.
    const r = await check()(ctx(sig(7) + sig(8) + sig(9) + real + msg));
    const h = r.add![0]!;
    expect(h).toContain("dkim=pass header.d=origin.test");
    expect(h).toContain("header.d=d9.attacker.test");
    expect(h).not.toContain("d7.attacker.test");
    expect(h).toContain("dkim=neutral (2 more DKIM signatures not checked: limit of 2 per message)");
    expect(r.verdict.kind).toBe("accept");
  });

  test("an ARC chain longer than max_arc_sets is not verified and says so; a shorter one is verified", async () => {
    const arcSet = (i: number) =>
      `ARC-Seal: i=${i}; a=rsa-sha256; cv=${i === 1 ? "none" : "pass"}; d=fwd${i}.test; s=s; b=AAAA\r\n` +
      `ARC-Message-Signature: i=${i}; a=rsa-sha256; c=relaxed/relaxed; d=fwd${i}.test; s=s; h=from; bh=AAAA; b=AAAA\r\n` +
      `ARC-Authentication-Results: i=${i}; fwd${i}.test; spf=pass\r\n`;
    const msg = "From: alice@origin.test\r\nTo: bob@dest.test\r\nSubject: arc\r\n\r\nHello\r\n";
    const long = await check()(ctx([3, 2, 1].map(arcSet).join("") + msg));
    expect(long.add![0]).toContain("arc=none (3 ARC sets not checked: limit of 2 per message)");
    const short = await check()(ctx([2, 1].map(arcSet).join("") + msg));
    expect(short.add![0]).toMatch(/arc=fail/);
  });

  test("a From folded past the header budget: not checked, handled as a DNS failure (temp_error: defer)", async () => {
    const msg = `From: alice@origin.test${"\r\n x".repeat(2000)}\r\nSubject: folded\r\n\r\nHello\r\n`;
    const r = await check()(ctx(msg));
    expect(r.verdict).toMatchObject({ kind: "defer", code: 451, status: "4.7.5" });
    expect(r.add).toEqual(["Authentication-Results: mx.dest.test; (not checked: header section too large) none"]);
  });
});
