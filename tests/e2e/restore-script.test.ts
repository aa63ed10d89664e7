// scripts/restore.sh, as the README tells an admin to run it: puts a backup in place (the
// current queue kept aside), refuses while the relay runs, and says why when it cannot.
// No systemd unit runs here, so the script has no service to stop and start.

import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { BINARY, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const SCRIPT = resolve(import.meta.dir, "../../scripts/restore.sh");
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

async function restoreSh(args: string[], bin = BINARY) {
  const proc = Bun.spawn([SCRIPT, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, MAILRAVEN_BIN: bin } });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { out, err, code };
}

function idsIn(db: string): string[] {
  const d = new Database(db, { readonly: true });
  try {
    return d.query<{ id: string }, []>("SELECT id FROM messages ORDER BY id").all().map((r) => r.id);
  } finally {
    d.close();
  }
}

async function queue(relay: Relay, n: number, tag: string): Promise<string[]> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    // Every other one is large enough for a spool file.
    const r = await talk.transaction("a@origin.test", ["bob@dest.test"], `Subject: ${tag} ${i}\r\n\r\n${i % 2 ? "" : "z".repeat(78).concat("\r\n").repeat(40)}end\r\n`);
    expect(r.code).toBe(250);
    ids.push(r.text.slice(-16));
  }
  talk.close();
  return ids;
}

const queueIdIn = (raw: Buffer) => /with ESMTP id ([0-9A-Z]{16})/.exec(raw.toString("latin1"))?.[1];

describe("scripts/restore.sh", () => {
  test("restores a backup: the backed-up messages come back and are delivered, the newer queue is kept aside", async () => {
    let accepting = false;
    const sink = await Sink.start({ rcpt: () => (accepting ? undefined : { code: 451, message: "4.3.0 not yet" }) });
    cleanups.push(() => sink.close());
    const config = { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["1h"], inline_max_size: "1KiB" } };
    const relay = await Relay.start({ config });
    cleanups.push(() => relay.cleanup());
    const backedUp = await queue(relay, 4, "before");
    const res = await relay.admin("POST", "/admin/backup");
    expect(res.status).toBe(200);
    const backup = ((await res.json()) as { path: string }).path;
    const later = await queue(relay, 2, "after");

    // While the relay runs the script refuses, says why, and leaves the queue alone.
    const refused = await restoreSh([backup, relay.configPath]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/mailraven \(pid \d+\) is running/);
    expect(refused.err).toContain("mailraven restore failed: see the message above; the state directory was left as it was");
    expect(await relay.stop()).toBe(0);
    const stateDir = join(relay.dir, "state");
    expect(idsIn(join(stateDir, "queue.db"))).toEqual([...backedUp, ...later].sort());

    const done = await restoreSh([backup, relay.configPath]);
    expect(done.err).toBe("");
    expect(done.code).toBe(0);
    expect(idsIn(join(stateDir, "queue.db"))).toEqual([...backedUp].sort());
    expect(readdirSync(join(stateDir, "spool")).sort()).toEqual(backedUp.filter((_, i) => i % 2 === 0).sort());
    // The queue it replaced is kept, whole, in state_dir/pre-restore-<time>/.
    const kept = readdirSync(stateDir).filter((n) => n.startsWith("pre-restore-"));
    expect(kept).toHaveLength(1);
    expect(idsIn(join(stateDir, kept[0]!, "queue.db"))).toEqual([...backedUp, ...later].sort());

    // Started again, the restored messages keep their schedule; a flush sends them.
    accepting = true;
    const after = await Relay.start({ config, dir: relay.dir });
    cleanups.push(async () => void (after.proc.exitCode === null && (await after.stop())));
    expect((await after.admin("POST", "/admin/queue/flush")).status).toBe(200);
    await waitFor(() => backedUp.every((id) => sink.messages.some((m) => queueIdIn(m.raw) === id)), 20_000, "the restored messages delivered");
    // Spooled bodies came back whole.
    const big = sink.messages.find((m) => queueIdIn(m.raw) === backedUp[0])!;
    expect(big.raw.toString("latin1")).toContain(`Subject: before 0\r\n\r\n${"z".repeat(78).concat("\r\n").repeat(40)}end\r\n`);
    expect(sink.messages.some((m) => later.includes(queueIdIn(m.raw) ?? ""))).toBe(false);
  }, 90_000);

  test("a path that is not a backup directory, or no binary: exit 1 with the reason", async () => {
    const missing = await restoreSh(["/nonexistent/backup"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toBe("mailraven restore failed: /nonexistent/backup is not a directory\n");
    const noBin = await restoreSh([import.meta.dir], "/nonexistent/mailraven");
    expect(noBin.code).toBe(1);
    expect(noBin.err).toContain("mailraven binary not found (set MAILRAVEN_BIN)");
  }, 30_000);
});
