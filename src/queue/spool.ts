// Spool files hold message bodies too large to keep inline in the database. A file is
// written, fsynced and its directory fsynced before the queue row that names it commits,
// so after a crash a committed row never points at a missing or partial file. Files
// without a row (a crash between the two) are removed at start-up.

import { closeSync, fsync, mkdirSync, openSync, readdirSync, unlinkSync, writeSync } from "node:fs";
import { promisify } from "node:util";

// fsync in the thread pool: a 25 MiB body must not stall every other session while it syncs.
const fsyncAsync = promisify(fsync);
import { join } from "node:path";

export class Spool {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  pathOf(id: string): string {
    return join(this.dir, id);
  }

  /** Opens a new spool file for a body that is still arriving. */
  create(id: string): SpoolWriter {
    return new SpoolWriter(this, id, openSync(this.pathOf(id), "wx", 0o600));
  }

  async syncDir(): Promise<void> {
    const fd = openSync(this.dir, "r");
    try {
      await fsyncAsync(fd);
    } finally {
      closeSync(fd);
    }
  }

  remove(id: string): void {
    try {
      unlinkSync(this.pathOf(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  /** Deletes files that no committed message refers to; returns how many. */
  removeOrphans(isKnown: (id: string) => boolean): number {
    let removed = 0;
    for (const name of readdirSync(this.dir)) {
      if (!isKnown(name)) {
        this.remove(name);
        removed++;
      }
    }
    return removed;
  }
}

export class SpoolWriter {
  private open = true;
  constructor(private readonly spool: Spool, readonly id: string, private readonly fd: number) {}

  write(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length) off += writeSync(this.fd, chunk, off, chunk.length - off);
  }

  /** Makes the file and its name durable. */
  async commit(): Promise<void> {
    await fsyncAsync(this.fd);
    this.close();
    await this.spool.syncDir();
  }

  discard(): void {
    this.close();
    this.spool.remove(this.id);
  }

  private close(): void {
    if (this.open) {
      this.open = false;
      closeSync(this.fd);
    }
  }
}
