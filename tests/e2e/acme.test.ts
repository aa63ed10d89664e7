// ACME with the compiled binary against a real CA: Pebble (Debian's package) on loopback, its
// challenges resolved through the dnsmasq fixture (mail.acme.test and smtp.acme.test ->
// 127.0.0.1) and fetched from the relay's responder on acme.http_listen. Pebble issues
// 30-second certificates, so the relay renews one while the test watches (at half-life).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { DnsServer } from "../helpers/dns.ts";
import { freePort, Pebble } from "../helpers/pebble.ts";
import { Relay, tempDir } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const NAMES = ["mail.acme.test", "smtp.acme.test"];
const VALIDITY_S = 30;

let dns: DnsServer;
let pebble: Pebble;
let sink: Sink;
let httpPort: number;
let workDir: string;
let rootCa: string;
const relays: Relay[] = [];

interface Served {
  readonly leaf: X509Certificate;
  readonly chainLength: number;
  readonly output: string;
}

/** What a client sees: openssl s_client with STARTTLS (or implicit TLS), SNI mail.acme.test, verifying against Pebble's root. */
async function served(port: number, starttls = true): Promise<Served> {
  const args = ["openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-servername", "mail.acme.test", "-showcerts", "-CAfile", rootCa, "-verify_hostname", "mail.acme.test"];
  const proc = Bun.spawn(starttls ? [...args, "-starttls", "smtp"] : args, { stdin: new Response(""), stdout: "pipe", stderr: "pipe" });
  const [output] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  const pems = output.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!pems[0]) throw new Error(`no certificate from port ${port}: ${output}`);
  return { leaf: new X509Certificate(pems[0]), chainLength: pems.length, output };
}

const portOf = (relay: Relay, mode: string) => Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === mode)!.port);

function acmeConfig(overrides: Record<string, unknown> = {}) {
  return { enabled: true, directory: pebble.directory, email: "postmaster@acme.test", hostnames: NAMES, http_listen: `127.0.0.1:${httpPort}`, ca_file: pebble.caFile, ...overrides };
}

function relayConfig(acme: Record<string, unknown>) {
  return {
    hostname: "mail.acme.test",
    relay: { domains: { "acme.test": sink.route } },
    submission: { starttls: ["127.0.0.1:0"], tls: ["127.0.0.1:0"] },
    acme,
  };
}

async function startRelay(acme: Record<string, unknown>, dir?: string): Promise<Relay> {
  const relay = await Relay.start({ config: relayConfig(acme), ...(dir ? { dir } : {}) });
  relays.push(relay);
  return relay;
}

beforeAll(async () => {
  workDir = tempDir("mailraven-acme-e2e-");
  dns = await DnsServer.start({ a: Object.fromEntries(NAMES.map((n) => [n, "127.0.0.1"])) });
  httpPort = await freePort();
  pebble = await Pebble.start(workDir, { dnsServer: dns.address, httpPort, validitySeconds: VALIDITY_S });
  // Pebble's root, to verify the chain the relay serves (regenerated at each Pebble start).
  const res = await fetch(`https://127.0.0.1:${pebble.managementPort}/roots/0`, { tls: { ca: readFileSync(pebble.caFile, "utf8") } });
  rootCa = join(workDir, "pebble-root.pem");
  writeFileSync(rootCa, await res.text());
  sink = await Sink.start();
}, 60_000);

afterAll(async () => {
  for (const r of relays) if (r.proc.exitCode === null) await r.stop();
  for (const r of relays) r.cleanup();
  await pebble?.stop();
  await dns?.stop();
  await sink?.close();
}, 60_000);

describe("ACME certificates from Pebble", () => {
  let relay: Relay;
  let firstSerial: string;
  // Its 30-second certificates would keep it ordering renewals during the next tests, which count Pebble's orders.
  afterAll(async () => {
    if (relay && relay.proc.exitCode === null) await relay.stop();
  }, 60_000);

  test("first start: the relay orders a certificate for all hostnames and STARTTLS (25, 587) and 465 present it", async () => {
    relay = await startRelay(acmeConfig());
    // Logged just after "mailraven started": waited for, not looked up at once.
    expect(await relay.waitForLog((l) => l.msg.startsWith("acme: no certificate yet"))).toMatchObject({ level: "warn", hostnames: NAMES });
    await relay.waitForLog((l) => l.msg === "acme certificate installed in the listeners", 60_000);
    const obtained = relay.logs.find((l) => l.msg === "acme certificate obtained")!;
    expect(obtained.names).toEqual(NAMES);

    const intermediate = await pebble.intermediate();
    const mx = await served(relay.port);
    expect(mx.leaf.issuer).toBe(intermediate.subject);
    expect(mx.leaf.issuer).toContain("Pebble Intermediate CA");
    expect(mx.leaf.subjectAltName).toBe("DNS:mail.acme.test, DNS:smtp.acme.test");
    // The chain is complete (leaf and intermediate) and verifies against Pebble's root for the name.
    expect(mx.chainLength).toBe(2);
    expect(mx.output).toContain("Verify return code: 0 (ok)");
    firstSerial = mx.leaf.serialNumber;
    expect(pebble.issued().map((s) => s.toUpperCase().replace(/^0+/, ""))).toEqual([firstSerial.replace(/^0+/, "")]);
    expect((await served(portOf(relay, "submission"))).leaf.serialNumber).toBe(firstSerial);
    expect((await served(portOf(relay, "smtps"), false)).leaf.serialNumber).toBe(firstSerial);

    // Cached under state_dir/acme: the directory 0700, the keys 0600.
    const dir = join(relay.dir, "state", "acme");
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "account.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "certificate.key")).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(readFileSync(join(dir, "certificate.pem"))).serialNumber).toBe(firstSerial);
  }, 120_000);

  test("a restart reuses the cached certificate: served from the first connection, no new order", async () => {
    const orders = pebble.orders();
    await relay.stop();
    relay = await startRelay(acmeConfig(), relay.dir);
    expect((await served(relay.port)).leaf.serialNumber).toBe(firstSerial);
    await relay.waitForLog((l) => l.msg === "acme certificate loaded from cache");
    expect(relay.count("acme order started")).toBe(0);
    expect(relay.logs.find((l) => l.msg.startsWith("acme: no certificate yet"))).toBeUndefined();
    expect(pebble.orders()).toBe(orders);
  }, 60_000);

  test("renewal at half-life swaps the new certificate into the running listeners; sessions in progress go on", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    expect((await talk.send("EHLO before.test")).lines.join("\n")).toContain("STARTTLS");
    const pid = relay.proc.pid;
    const installsBefore = relay.count("acme certificate installed in the listeners");
    const started = await relay.waitForLog((l) => l.msg === "acme order started", VALIDITY_S * 1000);
    expect(started.reason).toBe("due for renewal");
    await relay.waitForLog((l) => l.msg === "acme certificate installed in the listeners" && relay.count(l.msg) > installsBefore, 60_000);

    const renewed = await served(relay.port);
    expect(renewed.leaf.serialNumber).not.toBe(firstSerial);
    expect(renewed.output).toContain("Verify return code: 0 (ok)");
    expect((await served(portOf(relay, "smtps"), false)).leaf.serialNumber).toBe(renewed.leaf.serialNumber);
    expect(relay.proc.pid).toBe(pid);
    expect(relay.proc.exitCode).toBeNull();
    expect((await talk.send("NOOP")).code).toBe(250);
    expect((await talk.send("QUIT")).code).toBe(221);
    talk.close();
  }, VALIDITY_S * 1000 + 90_000);

  test("SIGHUP rebuilds the runtime with the ACME certificate still in it", async () => {
    const intermediate = await pebble.intermediate();
    const before = (await served(relay.port)).leaf.serialNumber;
    const installs = relay.count("acme certificate installed in the listeners");
    const reloads = relay.count("configuration reloaded");
    relay.proc.kill("SIGHUP");
    await relay.waitForLog((l) => l.msg === "configuration reloaded" && relay.count("configuration reloaded") > reloads);
    const after = await served(relay.port);
    // Ours (Pebble's intermediate, valid for the name), never smtp-server's built-in one; the
    // same one, unless the next renewal happened to land in between.
    expect(after.leaf.issuer).toBe(intermediate.subject);
    expect(after.leaf.subject).not.toContain("CN=localhost");
    expect(after.output).toContain("Verify return code: 0 (ok)");
    expect(after.leaf.serialNumber === before || relay.count("acme certificate installed in the listeners") > installs).toBe(true);
  }, 60_000);
});

describe("ACME failures never stop the relay", () => {
  test("an unreachable directory: logged and retried later; port 25 takes mail without STARTTLS, the submission ports refuse", async () => {
    const relay = await startRelay(acmeConfig({ directory: `https://127.0.0.1:${await freePort()}/dir` }));
    const failed = await relay.waitForLog((l) => l.msg === "acme order failed; the certificate in use stays in use", 30_000);
    expect(failed).toMatchObject({ level: "error", attempt: 1, retry_in: "1m", in_use: null });
    expect(String(failed.error)).toContain("ECONNREFUSED");
    expect((await relay.admin("GET", "/health", null)).status).toBe(200);

    const { talk } = await SmtpTalk.open(relay.port);
    const ehlo = await talk.send("EHLO client.test");
    expect(ehlo.code).toBe(250);
    expect(ehlo.lines.join("\n")).not.toContain("STARTTLS");
    // A client that sends STARTTLS anyway is refused, never handed the library's built-in certificate.
    const starttls = await talk.send("STARTTLS");
    expect(starttls.code).toBe(454);
    expect(starttls.text).toBe("4.7.0 TLS not available yet, try again later");
    expect((await talk.transaction("a@origin.test", ["bob@acme.test"], "Subject: no tls yet\r\n\r\nhello\r\n")).code).toBe(250);
    talk.close();

    const { talk: sub, greeting } = await SmtpTalk.open(portOf(relay, "submission"));
    expect(greeting.code).toBe(421);
    expect(greeting.text).toBe("4.7.0 TLS not available yet, try again later");
    sub.close();
    // 465: closed before any handshake, never the library's built-in certificate.
    const closedWithoutData = await new Promise<boolean>((resolve) => {
      let data = false;
      const s = connect(portOf(relay, "smtps"), "127.0.0.1");
      s.on("data", () => (data = true));
      s.on("error", () => {});
      s.on("close", () => resolve(!data));
    });
    expect(closedWithoutData).toBe(true);
    expect(relay.proc.exitCode).toBeNull();
  }, 60_000);

  test("the CA's certificate is verified: without ca_file Pebble is not trusted and the order fails before it starts", async () => {
    const orders = pebble.orders();
    const relay = await startRelay(acmeConfig({ ca_file: null }));
    const failed = await relay.waitForLog((l) => l.msg === "acme order failed; the certificate in use stays in use", 30_000);
    expect(String(failed.error)).toMatch(/certificate|CERT/i);
    expect(pebble.orders()).toBe(orders);
    expect(relay.proc.exitCode).toBeNull();
  }, 60_000);
});
