// Rebuilding a host from one backup. Host A runs with everything a real relay accumulates:
// mail queued for a next hop that is down, greylist passes, a block added through the admin
// API, DKIM keys whose records are published in DNS (dnsmasq), an ACME certificate from a real
// CA (Pebble) and a submission user. One POST /admin/backup; host A is then wiped. Host B starts
// from an empty directory, `mailraven restore` puts the backup in place, and B delivers A's mail,
// remembers the passes and the block, signs with A's selector (the signature verifies against
// the records published for A) and serves A's certificate without ordering a new one.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { authenticate, type DNSResolver } from "mailauth";
import { Resolver } from "../../src/dns/resolver.ts";
import { DnsServer } from "../helpers/dns.ts";
import { freePort, Pebble } from "../helpers/pebble.ts";
import { Database } from "bun:sqlite";
import { ADMIN_TOKEN, BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const NAME = "mail.acme.test";
const PASSWORD = "a long enough password";
const BLOCKED = "127.0.0.2";
let work: string;
let dns: DnsServer;
let pebble: Pebble;
let sink: Sink;
let accepting = false;
let records: { name: string; value: string }[];
let httpPort: number;
const relays: Relay[] = [];

/** The leaf certificate a client sees on a port (implicit TLS), verified against Pebble's root. */
async function servedCertificate(port: number, rootCa: string): Promise<{ serial: string; verified: boolean }> {
  const proc = Bun.spawn(["openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-servername", NAME, "-CAfile", rootCa, "-verify_hostname", NAME], { stdin: new Response(""), stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0];
  if (!pem) throw new Error(`no certificate on port ${port}: ${out}`);
  return { serial: new X509Certificate(pem).serialNumber, verified: out.includes("Verify return code: 0 (ok)") };
}

const portOf = (relay: Relay, mode: string) => Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === mode)!.port);
const queueIdIn = (raw: Buffer) => /with ESMTP id ([0-9A-Z]{16})/.exec(raw.toString("latin1"))?.[1];

/** One RCPT from a client address: the reply (the greeting's, when that refuses). */
async function rcpt(port: number, from: string, to: string, localAddress = "127.0.0.1"): Promise<{ code: number; text: string }> {
  const { talk, greeting } = await SmtpTalk.open(port, { localAddress });
  try {
    if (greeting.code !== 220) return greeting;
    await talk.send("EHLO client.origin.test");
    await talk.send(`MAIL FROM:<${from}>`);
    return await talk.send(`RCPT TO:<${to}>`);
  } finally {
    talk.close();
  }
}
const rcptFrom = async (port: number, from: string, to: string, localAddress?: string) => (await rcpt(port, from, to, localAddress)).code;

/** Behaves like a sending MTA: deferred at first, retries when the reply says to, until accepted. */
async function passGreylisting(port: number, from: string, to: string): Promise<void> {
  let r = await rcpt(port, from, to);
  expect(r.code).toBe(451);
  for (let tries = 0; r.code === 451 && tries < 10; tries++) {
    const seconds = Number(/try again in (\d+) seconds/.exec(r.text)?.[1] ?? 1);
    await Bun.sleep(seconds * 1000 + 50);
    r = await rcpt(port, from, to);
  }
  expect(r.code).toBe(250);
}

function hostConfig(acme: Record<string, unknown>) {
  return {
    hostname: NAME,
    // Loopback clients are the internet here: greylisted, never trusted to relay.
    relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
    queue: { retry_schedule: ["1h"], inline_max_size: "1KiB" },
    defenses: { greylist: { delay: "1s", auto_allowlist_after: 1000 } },
    submission: { starttls: [], tls: ["127.0.0.1:0"] },
    acme,
  };
}

beforeAll(async () => {
  work = tempDir("mailraven-rebuild-");
  sink = await Sink.start({ rcpt: () => (accepting ? undefined : { code: 451, message: "4.3.0 next hop down" }) });
  // The DKIM keys of host A exist before its DNS records can be published.
  mkdirSync(join(work, "a"));
  const keygenConfig = join(work, "a", "keygen.yaml");
  writeFileSync(keygenConfig, JSON.stringify({ hostname: NAME, state_dir: join(work, "a", "state") }));
  const keygen = await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--json", "--config", keygenConfig]);
  expect(keygen.code).toBe(0);
  records = (JSON.parse(keygen.out) as { records: { name: string; value: string }[] }).records;
  dns = await DnsServer.start({ a: { [NAME]: "127.0.0.1" }, txt: Object.fromEntries(records.map((r) => [r.name, [r.value]])) });
  httpPort = await freePort();
  pebble = await Pebble.start(work, { dnsServer: dns.address, httpPort });
}, 60_000);

afterAll(async () => {
  for (const r of relays) if (r.proc.exitCode === null) await r.stop();
  for (const r of relays) r.cleanup();
  await Promise.all([pebble?.stop(), dns?.stop(), sink?.close()]);
  rmSync(work, { recursive: true, force: true });
});

test("a host rebuilt from one backup delivers the queue, remembers passes and blocks, signs with the same keys and serves the same certificate", async () => {
  const acme = { enabled: true, directory: pebble.directory, email: "postmaster@acme.test", hostnames: [NAME], http_listen: `127.0.0.1:${httpPort}`, ca_file: pebble.caFile };
  const rootCa = join(work, "pebble-root.pem");
  writeFileSync(rootCa, await (await fetch(`https://127.0.0.1:${pebble.managementPort}/roots/0`, { tls: { ca: readFileSync(pebble.caFile, "utf8") } })).text());

  // ---- host A
  const a = await Relay.start({ config: hostConfig(acme), dir: join(work, "a") });
  relays.push(a);
  await a.waitForLog((l) => l.msg === "acme certificate installed in the listeners", 30_000);
  const certA = await servedCertificate(portOf(a, "smtps"), rootCa);
  expect(certA.verified).toBe(true);
  expect((await run([BINARY, "user", "add", "alice", "--identity", "@corp.test", "--password-stdin", "--config", a.configPath], `${PASSWORD}\n`)).code).toBe(0);

  // A greylist pass: deferred first, accepted once the delay is over.
  await passGreylisting(a.port, "sender@origin.test", "bob@dest.test");
  // A block through the admin API.
  const block = await fetch(`http://127.0.0.1:${a.adminPort}/admin/blocklist`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ cidr: BLOCKED, reason: "spam run" }) });
  expect(block.status).toBe(201);
  expect(await rcptFrom(a.port, "x@origin.test", "bob@dest.test", BLOCKED)).toBe(554);
  // Mail queued for a next hop that defers: small bodies inline, large ones in spool files.
  const { talk } = await SmtpTalk.open(a.port);
  await talk.send("EHLO client.origin.test");
  for (let i = 0; i < 6; i++) {
    const body = i % 2 ? "z".repeat(74).concat("\r\n").repeat(60) : "short\r\n";
    expect((await talk.transaction("sender@origin.test", ["bob@dest.test"], `Subject: queued ${i}\r\n\r\n${body}`)).code).toBe(250);
  }
  talk.close();
  const ordersBefore = pebble.orders();

  const res = await a.admin("POST", "/admin/backup");
  expect(res.status).toBe(200);
  const backup = (await res.json()) as { path: string; manifest: { components: Record<string, unknown>; files: { path: string }[] } };
  expect(backup.manifest.components).toMatchObject({ queue: { messages: 6, spool_files: 3 }, policy: { blocklist: 1 }, dkim: { domains: ["corp.test"] }, acme: {} });
  const db = new Database(join(backup.path, "queue.db"), { readonly: true });
  const queued = new Set(db.query<{ id: string }, []>("SELECT id FROM messages").all().map((r) => r.id));
  db.close();
  expect(queued.size).toBe(6);
  expect(await a.stop()).toBe(0);

  // The backup leaves the host; the host is wiped.
  const carried = join(work, "carried");
  expect((await run(["cp", "-a", backup.path, carried])).code).toBe(0);
  rmSync(join(work, "a"), { recursive: true, force: true });

  // ---- host B: an empty directory, the configuration the backup carries (its paths moved).
  const b = join(work, "b");
  mkdirSync(b);
  const { state_dir: _oldState, ...carriedConfig } = JSON.parse(readFileSync(join(carried, "config", "mailraven.yaml"), "utf8")) as Record<string, unknown>;
  void _oldState;
  expect(carriedConfig).toMatchObject({ hostname: NAME, acme: { hostnames: [NAME] }, defenses: { greylist: { delay: "1s" } } });
  const restoreConfig = join(work, "restore.yaml");
  writeFileSync(restoreConfig, JSON.stringify({ ...carriedConfig, state_dir: join(b, "state") }));
  const verify = await run([BINARY, "backup", "--verify", carried, "--config", restoreConfig]);
  expect(verify.code).toBe(0);
  const restored = await run([BINARY, "restore", carried, "--json", "--config", restoreConfig]);
  expect(restored.err).toBe("");
  expect(restored.code).toBe(0);
  expect(JSON.parse(restored.out)).toMatchObject({ components: ["queue", "policy", "dkim", "acme"], messages: 6, spool_files: 3, previous_state_kept_in: null });

  accepting = true;
  const relayB = await Relay.start({ config: carriedConfig, dir: b });
  relays.push(relayB);
  // The certificate comes from the restored ACME directory: no new order, the same serial.
  expect(relayB.logs.find((l) => l.msg === "acme certificate loaded from cache")).toBeDefined();
  const certB = await servedCertificate(portOf(relayB, "smtps"), rootCa);
  expect(certB).toEqual(certA);
  expect(pebble.orders()).toBe(ordersBefore);

  // Every message of the backup is delivered from host B.
  expect((await relayB.admin("POST", "/admin/queue/flush")).status).toBe(200);
  const delivered = () => new Set(sink.messages.map((m) => queueIdIn(m.raw)));
  await waitFor(() => [...queued].every((id) => delivered().has(id)), 30_000, "every backed-up message delivered from host B");
  const bodies = sink.messages.filter((m) => queued.has(queueIdIn(m.raw)!)).map((m) => m.raw.toString("latin1"));
  for (let i = 0; i < 6; i++) expect(bodies.some((r) => r.includes(`Subject: queued ${i}`) && r.includes(i % 2 ? "z".repeat(74) : "short"))).toBe(true);

  // The greylist pass is remembered (accepted at once); a new triplet is still greylisted.
  expect(await rcptFrom(relayB.port, "sender@origin.test", "bob@dest.test")).toBe(250);
  expect(await rcptFrom(relayB.port, "stranger@elsewhere.test", "bob@dest.test")).toBe(451);
  // The block is remembered.
  expect(await rcptFrom(relayB.port, "x@origin.test", "bob@dest.test", BLOCKED)).toBe(554);

  // Alice (restored with the queue database) sends; the relay signs with A's selector s1 and
  // both signatures verify against the records published for host A.
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: portOf(relayB, "smtps"), secure: true, auth: { user: "alice", pass: PASSWORD }, tls: { ca: readFileSync(rootCa, "utf8"), servername: NAME } });
  await transport.sendMail({ from: "alice@corp.test", to: "bob@dest.test", subject: "signed after the rebuild", text: "Same keys as before.\n" });
  const signed = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("signed after the rebuild")), 15_000, "the signed message");
  const resolver = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 1000, attempts: 2 });
  const auth = await authenticate(signed.raw, { ip: "127.0.0.1", helo: NAME, sender: "alice@corp.test", mta: "sink.test", resolver: resolver.forMailauth as DNSResolver, disableArc: true, disableBimi: true });
  expect(auth.dkim.results.map((r) => [String(r.selector), String(r.status.result)]).sort()).toEqual([["s1", "pass"], ["s1-ed25519", "pass"]]);
  expect(records.map((r) => r.name).sort()).toEqual(["s1-ed25519._domainkey.corp.test", "s1._domainkey.corp.test"]);
}, 150_000);
