// Hot backups while mail flows, and restoring one into a fresh state directory: every message
// that was queued at the moment of the backup is delivered from the restored copy.

import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ADMIN_TOKEN, BINARY, queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

const run = (cmd: string[]) => exec(cmd);

const queueIdIn = (raw: Buffer) => /with ESMTP id ([0-9A-Z]{16})/.exec(raw.toString("latin1"))?.[1];

function idsInBackup(path: string): string[] {
  const db = new Database(join(path, "queue.db"), { readonly: true });
  try {
    expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check).toBe("ok");
    return db.query<{ id: string }, []>("SELECT id FROM messages").all().map((r) => r.id);
  } finally {
    db.close();
  }
}

describe("hot backup and restore", () => {
  test("a backup taken under load, restored into a fresh state directory, delivers every message it holds", async () => {
    // The next hop defers everything at first, so the queue fills while the backup runs.
    let accepting = false;
    const sink = await Sink.start({ rcpt: () => (accepting ? undefined : { code: 451, message: "4.3.0 not yet" }) });
    cleanups.push(() => sink.close());
    const config = { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["1h"], inline_max_size: "2KiB" }, backup: { keep: 2 } };
    const relay = await Relay.start({ config });
    cleanups.push(() => relay.cleanup());

    // Sustained load: 4 sessions sending until told to stop; every third message is large
    // enough to live in a spool file.
    let stop = false;
    let sent = 0;
    /** Queue ids of the messages answered with 250, in order. */
    const acked: string[] = [];
    const load = Promise.all(
      Array.from({ length: 4 }, async (_, s) => {
        const { talk } = await SmtpTalk.open(relay.port);
        await talk.send("EHLO load.test");
        for (let i = 0; !stop && i < 2000; i++) {
          const big = i % 3 === 0 ? "x".repeat(76) + "\r\n" : "";
          const r = await talk.transaction(`s${s}@origin.test`, ["bob@dest.test"], `Subject: ${s}-${i}\r\n\r\n${big.repeat(60)}body\r\n`);
          if (r.code === 250) {
            sent++;
            acked.push(r.text.slice(-16));
          }
        }
        talk.close();
      }),
    );
    await waitFor(() => sent >= 200, 30_000, "200 messages queued");
    // Everything acknowledged before the backup was asked for must be in it.
    const ackedBefore = [...acked];
    const [first, second] = await Promise.all([relay.admin("POST", "/admin/backup"), Bun.sleep(5).then(() => relay.admin("POST", "/admin/backup"))]);
    expect(first.status).toBe(200);
    expect(second.status).toBe(409);
    expect(((await second.json()) as { error: { code: string } }).error.code).toBe("backup_running");
    const result = (await first.json()) as { path: string; database: string; bytes: number; sha256: string; duration_ms: number; messages: number; spool_files: number };
    await waitFor(() => sent >= result.messages + 50, 30_000, "load going on after the backup");
    stop = true;
    await load;

    expect(result.path).toStartWith(join(relay.dir, "state", "backups", "mailraven-"));
    expect(result.bytes).toBe(Bun.file(result.database).size);
    expect(result.sha256).toBe(new Bun.CryptoHasher("sha256").update(await Bun.file(result.database).arrayBuffer()).digest("hex"));
    expect(result.duration_ms).toBeGreaterThanOrEqual(0);
    const inBackup = idsInBackup(result.path);
    expect(inBackup.length).toBe(result.messages);
    expect(inBackup.length).toBeGreaterThanOrEqual(200);
    const inBackupSet = new Set(inBackup);
    expect(ackedBefore.filter((id) => !inBackupSet.has(id))).toEqual([]);
    expect(result.spool_files).toBeGreaterThan(0);
    expect(readdirSync(join(result.path, "spool")).length).toBe(result.spool_files);

    // Quiet now, and the next hop still defers everything: a second backup holds exactly the
    // acknowledged messages, none missing (the newest included) and none made up.
    const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, "").slice(0, 15);
    await waitFor(() => !result.path.endsWith(stamp(new Date()) + "Z"), 2000, "the next second (backup names have one-second resolution)");
    const quiet = await relay.admin("POST", "/admin/backup");
    expect(quiet.status).toBe(200);
    const quietIds = idsInBackup(((await quiet.json()) as { path: string }).path);
    expect(quietIds.length).toBe(acked.length);
    expect(new Set(quietIds)).toEqual(new Set(acked));
    await relay.stop();

    // Restore into a new state directory and let the next hop accept.
    const fresh = tempDir();
    cleanups.push(() => run(["rm", "-rf", fresh]));
    const restoredConfig = join(fresh, "restore.yaml");
    writeFileSync(restoredConfig, JSON.stringify({ ...config, state_dir: join(fresh, "state"), smtp: { listen: ["127.0.0.1:0"] }, admin: { enabled: false } }));
    const restored = await run([BINARY, "restore", result.path, "--config", restoredConfig, "--json"]);
    expect(restored.err).toBe("");
    expect(restored.code).toBe(0);
    expect(JSON.parse(restored.out)).toMatchObject({ messages: inBackup.length, spool_files: result.spool_files, previous_state_kept_in: null });
    accepting = true;
    const after = await Relay.start({ config: { ...config, state_dir: join(fresh, "state") }, dir: fresh });
    cleanups.push(async () => void (await after.stop()));
    // The restored queue keeps its retry schedule (next attempts an hour out); flush it.
    expect((await after.admin("POST", "/admin/queue/flush")).status).toBe(200);
    const delivered = () => new Set(sink.messages.map((m) => queueIdIn(m.raw)));
    await waitFor(() => inBackup.every((id) => delivered().has(id)), 60_000, "every backed-up message delivered");
    await waitFor(() => queueCounts(fresh).messages === 0, 10_000, "an empty restored queue");
  }, 180_000);

  test("retention keeps the newest backups; scripts/backup.sh reports success and failure", async () => {
    const relay = await Relay.start({ config: { backup: { keep: 2 } } });
    cleanups.push(() => relay.cleanup());
    const tokenFile = join(relay.dir, "admin.token");
    writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    const script = resolve(import.meta.dir, "../../scripts/backup.sh");
    const paths: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await run([script, tokenFile, `http://127.0.0.1:${relay.adminPort}`]);
      expect(r.code).toBe(0);
      paths.push((JSON.parse(r.out) as { path: string }).path);
      await Bun.sleep(1100); // backup names have one-second resolution
    }
    const dir = join(relay.dir, "state", "backups");
    expect(readdirSync(dir).sort()).toEqual(paths.slice(1).map((p) => p.slice(dir.length + 1)).sort());

    writeFileSync(tokenFile, "wrong-token-wrong-token-wrong-token\n");
    const denied = await run([script, tokenFile, `http://127.0.0.1:${relay.adminPort}`]);
    expect(denied.code).not.toBe(0);
    expect(denied.err).toContain("refused the token");
    const down = await run([script, tokenFile, "http://127.0.0.1:1"]);
    expect(down.code).not.toBe(0);
    expect(down.err).toContain("cannot reach the admin API");
    await relay.stop();
  }, 60_000);

  test("restore refuses a running relay, an existing queue without --force, and a damaged backup", async () => {
    const relay = await Relay.start({ config: {} });
    cleanups.push(() => relay.cleanup());
    const backup = await run([BINARY, "backup", "--offline", "--json", "--config", relay.configPath]);
    expect(backup.code).toBe(0);
    const path = (JSON.parse(backup.out) as { path: string }).path;

    const whileRunning = await run([BINARY, "restore", path, "--force", "--config", relay.configPath]);
    expect(whileRunning.code).toBe(1);
    expect(whileRunning.err).toMatch(/mailraven \(pid \d+\) is running/);

    // A second relay on the same state directory is refused too.
    const second = await run([BINARY, "serve", "--config", relay.configPath]);
    expect(second.code).toBe(1);
    expect(second.err).toContain("another mailraven");
    await relay.stop();

    const noForce = await run([BINARY, "restore", path, "--config", relay.configPath]);
    expect(noForce.code).toBe(1);
    expect(noForce.err).toContain("pass --force");
    const forced = await run([BINARY, "restore", path, "--force", "--json", "--config", relay.configPath]);
    expect(forced.code).toBe(0);
    const kept = (JSON.parse(forced.out) as { previous_state_kept_in: string }).previous_state_kept_in;
    expect(existsSync(join(kept, "queue.db"))).toBe(true);

    writeFileSync(join(path, "queue.db"), "this is not a database at all, just text".repeat(200));
    const damaged = await run([BINARY, "restore", path, "--force", "--config", relay.configPath]);
    expect(damaged.code).toBe(1);
    expect(damaged.err).toMatch(/not a valid database|cannot be opened|integrity/);
  }, 60_000);
});
