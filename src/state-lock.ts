// One relay per state directory: two processes delivering from one queue would send every
// message twice. The lock is an exclusive SQLite transaction on state_dir/mailraven.lock, held
// open for the relay's lifetime: SQLite takes it with a POSIX record lock (fcntl), which the
// kernel drops when the process ends however it ends (kill -9, OOM, power loss). Nothing is
// ever inferred from a process id, so a PID reused after a reboot cannot block start-up.
// mailraven.pid beside it only says which process holds the lock (for `mailraven reload` and
// error messages); it is never trusted on its own.

import { Database } from "bun:sqlite";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface StateLock {
  release(): void;
}

const LOCK_FILE = "mailraven.lock";
const PID_FILE = "mailraven.pid";
/**
 * Every lock held by this process. A Database that is garbage collected is closed, and its
 * lock with it (seen under Bun when a caller drops the StateLock): held connections stay
 * reachable from here until released.
 */
const held = new Set<Database>();

/** Thrown when another process holds the lock. */
export class StateLocked extends Error {
  constructor(
    readonly stateDir: string,
    readonly pid: number | null,
  ) {
    super(`another mailraven (${pid === null ? "pid unknown" : `pid ${pid}`}) is using the state directory ${stateDir}`);
  }
}

/** Tries the lock; the open connection holds it until closed. Null: someone else holds it. */
function tryLock(path: string): Database | null {
  const db = new Database(path, { readwrite: true, create: false });
  try {
    // No journal: nothing is ever written, the transaction exists only for its lock.
    db.run("PRAGMA journal_mode = OFF");
    // busy_timeout 0 (the default): a held lock answers SQLITE_BUSY at once.
    db.run("BEGIN EXCLUSIVE");
    return db;
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === "SQLITE_BUSY") return null;
    throw err;
  }
}

function recordedPid(stateDir: string): number | null {
  try {
    const pid = Number(readFileSync(join(stateDir, PID_FILE), "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * The pid of the relay running on `stateDir`, or null when none is. Never call it in the
 * process holding the lock for that directory other than through the pid check below: POSIX
 * record locks belong to the process, and closing a second connection to the lock file would
 * drop the holder's lock.
 */
export function runningPid(stateDir: string): number | null {
  const recorded = recordedPid(stateDir);
  // The holder always records its own pid, so our pid there means we hold it (or nobody does).
  if (recorded === process.pid) return null;
  const path = join(stateDir, LOCK_FILE);
  // Never created here: a probe run as root must not leave a root-owned lock file behind.
  if (!existsSync(path)) return null;
  const db = tryLock(path);
  // 0: held, but the holder has not written its pid yet (it does so right after locking).
  if (db === null) return recorded ?? 0;
  db.run("ROLLBACK");
  db.close();
  return null;
}

export function acquireStateLock(stateDir: string): StateLock {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, LOCK_FILE);
  closeSync(openSync(path, "a", 0o600));
  const db = tryLock(path);
  if (db === null) throw new StateLocked(stateDir, recordedPid(stateDir));
  const pidPath = join(stateDir, PID_FILE);
  // Written beside and renamed over: a reader never sees half a number, and a stale file we
  // may not write (left by another user) is replaced all the same.
  const tmp = `${pidPath}.${process.pid}`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600 });
  renameSync(tmp, pidPath);
  held.add(db);
  return {
    release() {
      if (!held.delete(db)) return;
      try {
        if (recordedPid(stateDir) === process.pid) unlinkSync(pidPath);
      } catch {
        // already gone
      }
      db.run("ROLLBACK");
      db.close();
    },
  };
}
