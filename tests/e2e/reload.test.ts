// SIGHUP: a valid new configuration (limits, routes, certificates) applies to new sessions
// without dropping the ones in progress; an invalid one is refused and the old one stays.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

let sink: Sink;
let relay: Relay;
let certDir: string;

const run = async (cmd: string[], stdin = ""): Promise<string> => (await exec(cmd, stdin)).text;

const makeCert = (cn: string) =>
  run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(certDir, "key.pem"), "-out", join(certDir, "cert.pem"), "-days", "2", "-subj", `/CN=${cn}`]);
const servedCn = async () => /subject=\s*CN\s*=\s*(\S+)/.exec(await run(["openssl", "s_client", "-connect", `127.0.0.1:${relay.port}`, "-starttls", "smtp"]))?.[1];

function editConfig(change: (doc: Record<string, Record<string, unknown>>) => void): void {
  const doc = JSON.parse(readFileSync(relay.configPath, "utf8")) as Record<string, Record<string, unknown>>;
  change(doc);
  writeFileSync(relay.configPath, JSON.stringify(doc, null, 2));
}

async function hup(expectMsg: string): Promise<void> {
  const before = relay.count(expectMsg);
  relay.proc.kill("SIGHUP");
  await waitFor(() => relay.count(expectMsg) > before, 10_000, expectMsg);
}

beforeAll(async () => {
  certDir = tempDir("mailraven-cert-");
  await makeCert("first.test");
  sink = await Sink.start();
  relay = await Relay.start({
    config: { relay: { domains: { "dest.test": sink.route } }, smtp: { tls: { cert_file: join(certDir, "cert.pem"), key_file: join(certDir, "key.pem") } } },
  });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

describe("SIGHUP", () => {
  test("new limits and routes apply to new sessions; a session in progress is not dropped", async () => {
    const { talk: old } = await SmtpTalk.open(relay.port);
    await old.send("EHLO before.test");
    editConfig((d) => {
      d.smtp!.max_recipients = 2;
      (d.relay!.domains as Record<string, string>)["new.test"] = sink.route;
    });
    await hup("configuration reloaded");

    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO after.test");
    await talk.send("MAIL FROM:<a@origin.test>");
    expect((await talk.send("RCPT TO:<x@new.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<y@dest.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<z@dest.test>")).code).toBe(452);
    talk.close();

    // The session opened before the reload still works.
    const r = await old.transaction("old@origin.test", ["bob@dest.test"], "Subject: across reload\r\n\r\nx\r\n");
    expect(r.code).toBe(250);
    old.close();
    await waitFor(() => sink.messages.some((m) => m.from === "old@origin.test"), 10_000, "delivery");
  });

  test("renewed certificate files are served after SIGHUP", async () => {
    expect(await servedCn()).toBe("first.test");
    await makeCert("second.test");
    await hup("configuration reloaded");
    expect(await servedCn()).toBe("second.test");
  });

  test("an invalid configuration is refused and the running one stays in force", async () => {
    editConfig((d) => {
      d.smtp!.max_recipients = "many";
    });
    await hup("configuration reload refused; the running configuration stays in force");
    const refused = relay.logs.findLast((l) => l.msg.startsWith("configuration reload refused"))!;
    expect(String(refused.error)).toContain("smtp.max_recipients");
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO after.test");
    await talk.send("MAIL FROM:<a@origin.test>");
    expect((await talk.send("RCPT TO:<x@new.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<y@dest.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<z@dest.test>")).code).toBe(452);
    talk.close();
    expect(relay.proc.exitCode).toBeNull();
  });
});

describe("admin API over TLS", () => {
  test("serves HTTPS with the configured certificate, refuses TLS 1.1, and the CLI reaches it", async () => {
    const secure = await Relay.start({ config: { admin: { tls: { cert_file: join(certDir, "cert.pem"), key_file: join(certDir, "key.pem") } } } });
    try {
      const res = await fetch(`https://127.0.0.1:${secure.adminPort}/health`, { tls: { rejectUnauthorized: false } });
      expect(res.status).toBe(200);
      await expect(fetch(`http://127.0.0.1:${secure.adminPort}/health`)).rejects.toThrow();
      const old = await run(["openssl", "s_client", "-connect", `127.0.0.1:${secure.adminPort}`, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
      expect(old).toMatch(/alert protocol version|no protocols available|Cipher is \(NONE\)/);
      const proc = Bun.spawn([BINARY, "queue", "ls", "--json", "--config", secure.cliConfigPath()], { stdout: "pipe", stderr: "pipe" });
      const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
      expect(code).toBe(0);
      expect(JSON.parse(out)).toEqual({ messages: [], next: null });
    } finally {
      await secure.stop();
      secure.cleanup();
    }
  });
});
