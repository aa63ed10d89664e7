// STARTTLS on a listener without a certificate of ours (none configured, or ACME's not there
// yet): refused, never completed with smtp-server's built-in certificate (expired,
// CN=localhost, its private key public in the npm package). The clients here send STARTTLS
// without it being advertised, as a careless or hostile client does.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../helpers/pebble.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let plain: Relay;
let acme: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  plain = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } } } });
  // An ACME relay whose CA never answers: it stays in the window before its first certificate.
  acme = await Relay.start({
    config: {
      hostname: "mail.acme.test",
      relay: { domains: { "dest.test": sink.route } },
      acme: { enabled: true, directory: `https://127.0.0.1:${await freePort()}/dir`, email: "postmaster@acme.test", hostnames: ["mail.acme.test"], http_listen: `127.0.0.1:${await freePort()}` },
    },
  });
}, 60_000);
afterAll(async () => {
  for (const r of [plain, acme]) {
    if (!r) continue;
    await r.stop();
    r.cleanup();
  }
  await sink?.close();
}, 60_000);

/** STARTTLS sent unasked on a raw socket: the reply, then proof the session is still plain SMTP and usable. */
async function unaskedStarttls(port: number, token: string) {
  const { talk } = await SmtpTalk.open(port);
  const ehlo = await talk.send("EHLO careless.test");
  expect(ehlo.code).toBe(250);
  expect(ehlo.lines.map((l) => l.slice(4))).not.toContain("STARTTLS");
  const reply = await talk.send("STARTTLS");
  // Still clear text: the next command is answered in clear text, and mail goes through.
  expect((await talk.send("NOOP")).code).toBe(250);
  const sent = await talk.transaction("a@origin.test", ["bob@dest.test"], `Subject: ${token}\r\n\r\nstill plain\r\n`);
  expect(sent.code).toBe(250);
  talk.close();
  await waitFor(() => sink.messages.find((m) => m.raw.includes(`Subject: ${token}`)), 10_000, "the message sent after the refusal");
  return reply;
}

/** What openssl s_client -starttls smtp gets (it sends STARTTLS even when not offered). */
async function opensslStarttls(port: number) {
  const r = await run(["openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-starttls", "smtp", "-servername", "mail.acme.test"], "");
  expect(r.text).toContain("STARTTLS"); // it did try ("Didn't find STARTTLS in server response, trying anyway")
  return r.text;
}

function expectNoCertificate(output: string): void {
  expect(output).not.toContain("-----BEGIN CERTIFICATE-----");
  expect(output).not.toMatch(/subject=\s*CN\s*=\s*localhost/);
  expect(output).toContain("no peer certificate available");
}

describe("STARTTLS without a certificate", () => {
  test("none configured: 502 5.5.1, the session stays in clear text and takes mail", async () => {
    const r = await unaskedStarttls(plain.port, "after-502");
    expect(r.code).toBe(502);
    expect(r.text).toBe("5.5.1 STARTTLS not available: no certificate configured");
  });

  test("none configured: openssl s_client -starttls smtp gets no certificate", async () => {
    expectNoCertificate(await opensslStarttls(plain.port));
  });

  test("ACME before its first certificate: 454 4.7.0 on port 25, mail still accepted", async () => {
    await acme.waitForLog((l) => l.msg === "acme order failed; the certificate in use stays in use", 20_000);
    const r = await unaskedStarttls(acme.port, "after-454");
    expect(r.code).toBe(454);
    expect(r.text).toBe("4.7.0 TLS not available yet, try again later");
  });

  test("ACME before its first certificate: openssl s_client -starttls smtp gets no certificate", async () => {
    expectNoCertificate(await opensslStarttls(acme.port));
  });

  test("commands pipelined behind STARTTLS never run, in clear text or in TLS: 554 5.5.0, closed (RFC 2920 3.1, RFC 3207)", async () => {
    const { talk } = await SmtpTalk.open(plain.port);
    expect((await talk.send("EHLO pipe.test")).code).toBe(250);
    talk.write("STARTTLS\r\nNOOP\r\n");
    const r = await talk.reply();
    expect(r.code).toBe(554);
    expect(r.text).toBe("5.5.0 Error: SMTP protocol synchronization");
    await talk.closed;
  });

  test("after the refusal the session goes on in clear text, each command answered in order", async () => {
    const { talk } = await SmtpTalk.open(plain.port);
    expect((await talk.send("EHLO pipe.test")).code).toBe(250);
    expect((await talk.send("STARTTLS")).code).toBe(502);
    expect((await talk.send("NOOP")).code).toBe(250);
    expect((await talk.send("QUIT")).code).toBe(221);
    talk.close();
  });
});
