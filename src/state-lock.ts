// One relay per state directory: two processes delivering from one queue would send every
// message twice. The lock is a pid file; a stale one (its process gone after kill -9) is taken over.

import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

export interface StateLock {
  release(): void;
}

export function runningPid(stateDir: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(join(stateDir, "mailraven.pid"), "utf8").trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: it exists but belongs to someone else, so it is alive.
    return (err as NodeJS.ErrnoException).code === "EPERM" ? pid : null;
  }
}

export function acquireStateLock(stateDir: string): StateLock {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, "mailraven.pid");
  const other = runningPid(stateDir);
  if (other !== null) throw new Error(`another mailraven (pid ${other}) is using the state directory ${stateDir}`);
  try {
    unlinkSync(path);
  } catch {
    // none there, or stale: either way it is ours now
  }
  const fd = openSync(path, "wx", 0o600);
  writeSync(fd, `${process.pid}\n`);
  closeSync(fd);
  return {
    release() {
      try {
        if (readFileSync(path, "utf8").trim() === String(process.pid)) unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
