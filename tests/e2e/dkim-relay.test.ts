// DKIM through the compiled relay: `mailraven dkim keygen` prints the records, an authenticated
// user's mail leaves with RSA and Ed25519 signatures that verify against them; mail from the
// internet is not signed.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { authenticate, type DNSResolver } from "mailauth";
import { Resolver } from "../../src/dns/resolver.ts";
import { DnsServer } from "../helpers/dns.ts";
import { BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

const PASSWORD = "a long enough password";
let sink: Sink;
let relay: Relay;
let dns: DnsServer;

const run = async (cmd: string[], stdin = "") => {
  const r = await exec(cmd, stdin);
  return { code: r.code, out: r.text };
};

beforeAll(async () => {
  const certDir = tempDir("mailraven-cert-");
  const cert = { cert_file: join(certDir, "c.pem"), key_file: join(certDir, "k.pem") };
  expect((await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", cert.key_file, "-out", cert.cert_file, "-days", "2", "-subj", "/CN=mail.test"])).code).toBe(0);
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
      submission: { starttls: [], tls: ["127.0.0.1:0"], certificates: [cert] },
    },
  });
  const keygen = await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--json", "--config", relay.configPath]);
  expect(keygen.code).toBe(0);
  const records = (JSON.parse(keygen.out) as { records: { name: string; value: string }[] }).records;
  expect(records.map((r) => r.name).sort()).toEqual(["s1-ed25519._domainkey.corp.test", "s1._domainkey.corp.test"]);
  dns = await DnsServer.start({ txt: Object.fromEntries(records.map((r) => [r.name, [r.value]])) });
  expect((await run([BINARY, "user", "add", "alice", "--identity", "@corp.test", "--password-stdin", "--config", relay.configPath], `${PASSWORD}\n`)).code).toBe(0);
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([sink.close(), dns.stop()]);
}, 60_000);

test("an authenticated user's mail is signed with both keys, and both signatures verify", async () => {
  const port = Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === "smtps")!.port);
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: true, auth: { user: "alice", pass: PASSWORD }, tls: { rejectUnauthorized: false } });
  await transport.sendMail({ from: "alice@corp.test", to: "bob@dest.test", subject: "signed by the relay", text: "Quarterly numbers attached.\n" });
  const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("signed by the relay")), 10_000, "delivery");
  const raw = got.raw.toString("latin1");
  expect(raw.match(/^DKIM-Signature:/gim)?.length).toBe(2);
  const resolver = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 500, attempts: 1 });
  const result = await authenticate(got.raw, { ip: "127.0.0.1", helo: "relay.test", sender: "alice@corp.test", mta: "sink.test", resolver: resolver.forMailauth as DNSResolver, disableArc: true, disableBimi: true });
  const dkim = result.dkim.results.map((r) => [String(r.selector), String(r.status.result)]);
  expect(dkim.sort()).toEqual([["s1", "pass"], ["s1-ed25519", "pass"]]);
});

test("mail from the internet is relayed unsigned", async () => {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO outside.test");
  const r = await talk.transaction("someone@corp.test", ["bob@dest.test"], "From: someone@corp.test\r\nSubject: inbound\r\n\r\nhi\r\n");
  expect(r.code).toBe(250);
  talk.close();
  const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: inbound")), 10_000, "delivery");
  expect(got.raw.toString()).not.toContain("DKIM-Signature:");
});
