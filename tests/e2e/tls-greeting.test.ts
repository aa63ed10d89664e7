// STARTTLS with a configured certificate (TLS 1.2 minimum, tested under Bun end to end),
// and the greeting delay adapter around smtp-server's fixed 100 ms wait.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

let sink: Sink;
let relay: Relay;
let delayed: Relay;
const GREETING_DELAY_MS = 1500;

const run = async (cmd: string[], stdin?: string) => {
  const r = await exec(cmd, stdin);
  return { code: r.code, out: r.text };
};

beforeAll(async () => {
  const certDir = tempDir("mailraven-cert-");
  const key = join(certDir, "key.pem");
  const cert = join(certDir, "cert.pem");
  const gen = await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=relay.test"]);
  expect(gen.code).toBe(0);
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } }, smtp: { tls: { cert_file: cert, key_file: key } } } });
  // Only 127.0.0.2 is trusted: 127.0.0.1 is an unknown client and waits for its greeting.
  delayed = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] }, smtp: { greeting_delay: `${GREETING_DELAY_MS}ms` } } });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, delayed]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

describe("STARTTLS", () => {
  test("is advertised when a certificate is configured", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    const ehlo = await talk.send("EHLO client.test");
    expect(ehlo.lines.map((l) => l.slice(4))).toContain("STARTTLS");
    talk.close();
  });

  test("swaks over STARTTLS: delivered, and the trace header records the TLS version and cipher", async () => {
    const r = await run(["swaks", "--server", `127.0.0.1:${relay.port}`, "--tls", "--from", "tls@origin.test", "--to", "bob@dest.test", "--header", "Subject: over tls"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/TLS started with cipher TLSv1\.[23]/);
    const got = await waitFor(() => sink.messages.find((m) => m.from === "tls@origin.test"), 10_000, "delivery");
    expect(got.raw.toString()).toMatch(/^Received: from \S+ \(unknown \[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\r\n\tby relay\.test \(mailraven\) with ESMTPS id /);
  });

  test("TLS 1.1 and older are refused", async () => {
    const r = await run(["openssl", "s_client", "-connect", `127.0.0.1:${relay.port}`, "-starttls", "smtp", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "");
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("alert protocol version");
    expect(r.out).toContain("Cipher is (NONE)");
    const ok = await run(["openssl", "s_client", "-connect", `127.0.0.1:${relay.port}`, "-starttls", "smtp", "-tls1_2"], "");
    expect(ok.out).toMatch(/Protocol\s*:\s*TLSv1\.2/);
    expect(ok.out).not.toContain("Cipher is (NONE)");
  });
});

describe("greeting delay", () => {
  test("a trusted client is greeted at once; an unknown client only after the delay", async () => {
    let t0 = Date.now();
    const trusted = await SmtpTalk.open(delayed.port, { localAddress: "127.0.0.2" });
    const trustedMs = Date.now() - t0;
    t0 = Date.now();
    const unknown = await SmtpTalk.open(delayed.port, { localAddress: "127.0.0.1" });
    const unknownMs = Date.now() - t0;
    expect(trusted.greeting.code).toBe(220);
    expect(unknown.greeting.code).toBe(220);
    // Bounds far apart on purpose: what is tested is which side of the delay each lands on.
    expect(trustedMs).toBeLessThan(GREETING_DELAY_MS / 2);
    expect(unknownMs).toBeGreaterThanOrEqual(GREETING_DELAY_MS - 50);
    trusted.talk.close();
    unknown.talk.close();
  });

  test("a client that talks before the greeting gets 554 5.5.1 and is disconnected (pregreet test)", async () => {
    // A fresh address: 127.0.0.1 passed the pregreet test above and is now greeted at once.
    const talk = await SmtpTalk.connect(delayed.port, { localAddress: "127.0.0.9" });
    talk.write("EHLO eager.test\r\n");
    const r = await talk.reply(GREETING_DELAY_MS * 3);
    expect(r.code).toBe(554);
    expect(r.text).toStartWith("5.5.1 ");
    await talk.closed;
    await delayed.waitForLog((l) => l.msg === "early talker refused" && l.client_ip === "127.0.0.9");
  });

  test("a client that passed the pregreet test is greeted at once next time", async () => {
    const t0 = Date.now();
    const again = await SmtpTalk.open(delayed.port, { localAddress: "127.0.0.1" });
    expect(again.greeting.code).toBe(220);
    expect(Date.now() - t0).toBeLessThan(GREETING_DELAY_MS / 2);
    again.talk.close();
  });
});
