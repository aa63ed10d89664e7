// A complete, consistent copy of the queue: SQLite's VACUUM INTO (a transactionally
// consistent copy taken while the relay keeps writing), plus the spool files its messages
// need, verified with PRAGMA integrity_check and fsynced, under a new timestamped directory.
// Runs in its own process (`mailraven backup --offline`, or spawned by the admin API) so the
// relay's event loop never waits on it.

import { Database } from "bun:sqlite";
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { fsyncPath } from "../fsync.ts";
import { join } from "node:path";

export interface BackupResult {
  readonly path: string;
  readonly database: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly messages: number;
  readonly spool_files: number;
  readonly duration_ms: number;
  readonly removed_old: readonly string[];
}

const PREFIX = "mailraven-";

/** A backup that cannot be made, for a reason the operator can act on. */
export class BackupError extends Error {}

export function backupName(now: Date): string {
  return PREFIX + now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

export async function createBackup(stateDir: string, backupDir: string, keep: number, now = new Date()): Promise<BackupResult> {
  const started = performance.now();
  if (!existsSync(join(stateDir, "queue.db"))) {
    throw new BackupError(`no queue database in ${stateDir}: mailraven has not run with this state_dir yet, so there is nothing to back up`);
  }
  mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  removeAbandoned(backupDir);
  const name = backupName(now);
  const final = join(backupDir, name);
  const partial = join(backupDir, `.partial-${name}-${process.pid}`);
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(join(partial, "spool"), { recursive: true, mode: 0o700 });
  try {
    const dbCopy = join(partial, "queue.db");
    const source = new Database(join(stateDir, "queue.db"), { readonly: true });
    try {
      source.run("VACUUM INTO ?", [dbCopy]);
    } finally {
      source.close();
    }
    const copy = new Database(dbCopy, { strict: true });
    let messages = 0;
    let spoolFiles = 0;
    try {
      // A message whose spool file is gone finished (delivered or bounced) after the
      // snapshot: drop it from the copy rather than restore a message without a body.
      for (const { id } of copy.query<{ id: string }, []>("SELECT id FROM messages WHERE body IS NULL").all()) {
        try {
          copyFileSync(join(stateDir, "spool", id), join(partial, "spool", id));
          fsyncPath(join(partial, "spool", id));
          spoolFiles++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
          copy.run("DELETE FROM recipients WHERE message_id = ?", [id]);
          copy.run("DELETE FROM messages WHERE id = ?", [id]);
        }
      }
      const check = copy.query<{ integrity_check: string }, []>("PRAGMA integrity_check").all();
      if (check.length !== 1 || check[0]!.integrity_check !== "ok") {
        throw new Error(`integrity check of the copy failed: ${check.map((r) => r.integrity_check).join("; ")}`);
      }
      messages = copy.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM messages").get()!.n;
      copy.run("PRAGMA journal_mode = DELETE");
    } finally {
      copy.close();
    }
    fsyncPath(dbCopy);
    fsyncPath(join(partial, "spool"));
    fsyncPath(partial);
    renameSync(partial, final);
    fsyncPath(backupDir);
    const hasher = new Bun.CryptoHasher("sha256");
    for await (const chunk of Bun.file(join(final, "queue.db")).stream()) hasher.update(chunk);
    return {
      path: final,
      database: join(final, "queue.db"),
      bytes: statSync(join(final, "queue.db")).size,
      sha256: hasher.digest("hex"),
      messages,
      spool_files: spoolFiles,
      duration_ms: Math.round(performance.now() - started),
      removed_old: prune(backupDir, keep),
    };
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    throw err;
  }
}

/** Partial backups left by a backup process that was killed (its pid is gone). */
function removeAbandoned(backupDir: string): void {
  for (const name of readdirSync(backupDir)) {
    const pid = Number(/^\.partial-.*-(\d+)$/.exec(name)?.[1]);
    if (!pid) continue;
    try {
      process.kill(pid, 0);
    } catch {
      rmSync(join(backupDir, name), { recursive: true, force: true });
    }
  }
}

/** Keeps the newest `keep` backups (names sort by time). */
function prune(backupDir: string, keep: number): string[] {
  const all = readdirSync(backupDir).filter((n) => n.startsWith(PREFIX)).sort();
  const old = all.slice(0, Math.max(0, all.length - keep));
  for (const n of old) rmSync(join(backupDir, n), { recursive: true, force: true });
  return old;
}
