// Room on the state directory's file system. Below queue.min_free_space (Postfix's
// queue_minfree) new mail is deferred at MAIL FROM with "452 4.3.1", before the client sends
// a message the queue could not hold; /health reports it, and whether a write gets through.

import { closeSync, fsyncSync, openSync, statfsSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

/** statfs is cheap, but not needed per message: a second-old answer is good enough. */
const RECHECK_MS = 1000;
const PROBE = Buffer.alloc(4096, 0x2e);

export class DiskSpace {
  private checkedAt = -Infinity;
  private free = Infinity;

  constructor(
    readonly dir: string,
    private readonly minFree: () => number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Bytes an unprivileged process may still write there (statfs f_bavail). */
  freeBytes(): number {
    const t = this.now();
    if (t - this.checkedAt < RECHECK_MS) return this.free;
    this.checkedAt = t;
    try {
      const s = statfsSync(this.dir);
      this.free = s.bavail * s.bsize;
    } catch {
      // Unknown is not "full": a failing statfs must not stop the mail; /health probes writes.
      this.free = Infinity;
    }
    return this.free;
  }

  /** The configured reserve (queue.min_free_space). */
  reserveBytes(): number {
    return this.minFree();
  }

  /** Free space is under the reserve. */
  low(): boolean {
    return this.freeBytes() < this.minFree();
  }

  /** A write failed for lack of space: look again at the next question rather than trust the cache. */
  forget(): void {
    this.checkedAt = -Infinity;
  }

  /** Writes, syncs and removes a small file: can the queue take anything at all? */
  writable(): boolean {
    const path = join(this.dir, ".write-probe");
    let fd = -1;
    try {
      fd = openSync(path, "w", 0o600);
      writeSync(fd, PROBE);
      fsyncSync(fd);
      return true;
    } catch {
      return false;
    } finally {
      if (fd !== -1) closeSync(fd);
      try {
        unlinkSync(path);
      } catch {
        // nothing was created
      }
    }
  }
}

/** Errors that mean the disk (not the message) is the problem. */
export function isStorageError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(ENOSPC|EDQUOT|EIO|EROFS|EFBIG|SQLITE_FULL|SQLITE_IOERR.*|SQLITE_READONLY.*|SQLITE_CANTOPEN)$/.test(code);
}
