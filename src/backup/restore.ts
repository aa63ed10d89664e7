// Offline restore of a backup made by createBackup: verify it first, keep the current queue
// aside (never overwrite), then put the copy in place. Refuses while a relay runs on the
// state directory, and refuses to replace an existing queue without `force`.

import { Database } from "bun:sqlite";
import { chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, statSync } from "node:fs";
import { fsyncPath } from "../fsync.ts";
import { join } from "node:path";
import { runningPid } from "../state-lock.ts";
import { backupName } from "./snapshot.ts";

export interface RestoreResult {
  readonly restored_from: string;
  readonly messages: number;
  readonly spool_files: number;
  readonly previous_state_kept_in: string | null;
}

export class RestoreError extends Error {}

export function restoreBackup(backupPath: string, stateDir: string, force: boolean, now = new Date()): RestoreResult {
  const pid = runningPid(stateDir);
  if (pid !== null) throw new RestoreError(`mailraven (pid ${pid}) is running on ${stateDir}; stop it first (systemctl stop mailraven)`);
  const db = join(backupPath, "queue.db");
  if (!existsSync(db)) throw new RestoreError(`${backupPath} is not a mailraven backup: no queue.db in it`);
  const { messages, spoolIds } = verify(db, backupPath);

  const current = join(stateDir, "queue.db");
  let keptIn: string | null = null;
  if (existsSync(current)) {
    if (!force) throw new RestoreError(`${stateDir} already holds a queue; pass --force to restore over it (the current one is kept aside, not deleted)`);
    keptIn = join(stateDir, `pre-restore-${backupName(now).slice("mailraven-".length)}`);
    mkdirSync(keptIn, { mode: 0o700 });
    for (const name of ["queue.db", "queue.db-wal", "queue.db-shm", "spool"]) {
      if (existsSync(join(stateDir, name))) renameSync(join(stateDir, name), join(keptIn, name));
    }
  }
  mkdirSync(join(stateDir, "spool"), { recursive: true, mode: 0o700 });
  for (const id of spoolIds) {
    copyFileSync(join(backupPath, "spool", id), join(stateDir, "spool", id));
    fsyncPath(join(stateDir, "spool", id));
  }
  fsyncPath(join(stateDir, "spool"));
  // Copy under a temporary name and rename, so a crash never leaves half a database in place.
  const tmp = join(stateDir, ".queue.db.restoring");
  copyFileSync(db, tmp);
  fsyncPath(tmp);
  renameSync(tmp, current);
  fsyncPath(stateDir);
  // Run as root (from a script), the new files would be root's and the relay, running as
  // the state directory's owner, could not open them: hand them to that owner.
  if (process.getuid?.() === 0) {
    const { uid, gid } = statSync(stateDir);
    for (const path of [current, join(stateDir, "spool"), ...spoolIds.map((id) => join(stateDir, "spool", id))]) chownSync(path, uid, gid);
  }
  return { restored_from: backupPath, messages, spool_files: spoolIds.length, previous_state_kept_in: keptIn };
}

function verify(dbPath: string, backupPath: string): { messages: number; spoolIds: string[] } {
  let copy: Database;
  try {
    copy = new Database(dbPath, { readonly: true, strict: true });
  } catch (err) {
    throw new RestoreError(`${dbPath} cannot be opened: ${(err as Error).message}`);
  }
  try {
    let check: { integrity_check: string }[];
    try {
      check = copy.query<{ integrity_check: string }, []>("PRAGMA integrity_check").all();
    } catch (err) {
      throw new RestoreError(`${dbPath} is not a valid database: ${(err as Error).message}`);
    }
    if (check.length !== 1 || check[0]!.integrity_check !== "ok") throw new RestoreError(`${dbPath} failed its integrity check: ${check.map((r) => r.integrity_check).join("; ")}`);
    const spoolIds = copy.query<{ id: string }, []>("SELECT id FROM messages WHERE body IS NULL").all().map((r) => r.id);
    const present = new Set(existsSync(join(backupPath, "spool")) ? readdirSync(join(backupPath, "spool")) : []);
    const missing = spoolIds.filter((id) => !present.has(id));
    if (missing.length) throw new RestoreError(`${backupPath} is incomplete: spool files missing for ${missing.length} message(s), e.g. ${missing[0]}`);
    return { messages: copy.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM messages").get()!.n, spoolIds };
  } finally {
    copy.close();
  }
}
