// `mailraven reload`, what `systemctl reload` runs: it checks the configuration and then
// signals the running relay itself (found through the state directory's lock, or --pid), so
// no /bin/kill is needed; an invalid file fails the reload and never reaches the relay.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let relay: Relay;

function editConfig(change: (doc: Record<string, Record<string, unknown>>) => void): void {
  const doc = JSON.parse(readFileSync(relay.configPath, "utf8")) as Record<string, Record<string, unknown>>;
  change(doc);
  writeFileSync(relay.configPath, JSON.stringify(doc, null, 2));
}

/** How many RCPT TO the relay accepts in one transaction now. */
async function recipientLimit(): Promise<number> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  await talk.send("MAIL FROM:<a@origin.test>");
  let n = 0;
  while (n < 10 && (await talk.send(`RCPT TO:<r${n}@dest.test>`)).code === 250) n++;
  talk.close();
  return n;
}

const reloads = () => relay.logs.filter((l) => l.msg === "configuration reloaded" || l.msg.startsWith("configuration reload refused")).length;

beforeAll(async () => {
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": "smtp://127.0.0.1:2" } }, smtp: { max_recipients: 5 } } });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
}, 30_000);

describe("mailraven reload", () => {
  test("finds the relay through the state directory's lock, signals it, and the new limits apply", async () => {
    expect(await recipientLimit()).toBe(5);
    editConfig((d) => void (d.smtp!.max_recipients = 3));
    const before = reloads();
    const r = await run([BINARY, "reload", "--config", relay.configPath]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`configuration is valid; mailraven (pid ${relay.proc.pid}) is reloading it\n`);
    await waitFor(() => reloads() > before, 10_000, "the reload");
    expect(relay.logs.findLast((l) => l.msg.startsWith("configuration reload"))!.msg).toBe("configuration reloaded");
    expect(await recipientLimit()).toBe(3);
  }, 30_000);

  test("--pid (systemd's $MAINPID) names the process to signal", async () => {
    editConfig((d) => void (d.smtp!.max_recipients = 4));
    const before = reloads();
    const r = await run([BINARY, "reload", "--config", relay.configPath, "--pid", String(relay.proc.pid)]);
    expect(r.code).toBe(0);
    await waitFor(() => reloads() > before, 10_000, "the reload");
    expect(await recipientLimit()).toBe(4);
  }, 30_000);

  test("an invalid file fails with exit 78 and its errors, and the relay is never signalled", async () => {
    const before = reloads();
    editConfig((d) => void (d.smtp!.max_recipients = "many"));
    const bad = await run([BINARY, "reload", "--config", relay.configPath]);
    expect(bad.code).toBe(78);
    expect(bad.err).toContain("smtp.max_recipients");
    // A certificate that cannot be read is refused the same way (the relay would refuse it too).
    editConfig((d) => {
      d.smtp!.max_recipients = 2;
      d.smtp!.tls = { cert_file: "/nonexistent/cert.pem", key_file: "/nonexistent/key.pem" };
    });
    const unreadable = await run([BINARY, "reload", "--config", relay.configPath]);
    expect(unreadable.code).toBe(1);
    expect(unreadable.err).toContain("smtp.tls: cannot read the certificate /nonexistent/cert.pem");
    // Had either reached the relay it would have logged a refusal; the next valid reload is the
    // only one it sees, and the limit from before the bad files held until then.
    expect(await recipientLimit()).toBe(4);
    editConfig((d) => void delete d.smtp!.tls);
    const good = await run([BINARY, "reload", "--config", relay.configPath]);
    expect(good.code).toBe(0);
    await waitFor(() => reloads() > before, 10_000, "the reload");
    expect(reloads()).toBe(before + 1);
    expect(await recipientLimit()).toBe(2);
  }, 30_000);

  test("no relay running on the state directory: exit 1 saying so", async () => {
    const dir = tempDir();
    const config = join(dir, "mailraven.yaml");
    writeFileSync(config, JSON.stringify({ hostname: "relay.test", state_dir: join(dir, "state") }));
    const r = await run([BINARY, "reload", "--config", config]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`no mailraven is running on ${join(dir, "state")}`);
  }, 30_000);
});
