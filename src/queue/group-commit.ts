// Group commit: writes requested during one turn of the event loop share one SQLite
// transaction and so one fsync of the WAL. Each request runs in its own savepoint, so a
// failing request is rejected alone and the others still commit.
//
// bun:sqlite is synchronous, so the commit blocks the loop for one fsync; while it does,
// further requests pile up in the sockets and form the next, larger group.

import type { Database } from "bun:sqlite";

interface Pending {
  run: () => void;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class GroupCommit {
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly savepoint: (run: () => void) => void;
  private readonly batch: (ops: Pending[]) => unknown[];

  constructor(db: Database) {
    this.savepoint = db.transaction((run: () => void) => run());
    this.batch = db.transaction((ops: Pending[]) =>
      ops.map((op) => {
        try {
          this.savepoint(op.run);
          return undefined;
        } catch (err) {
          return err ?? new Error("write failed");
        }
      }),
    );
  }

  /** Resolves once `run`'s writes are committed and fsynced. */
  submit(run: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ run, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits everything submitted so far; also used at shutdown. */
  flush(): void {
    this.scheduled = false;
    const ops = this.pending;
    if (ops.length === 0) return;
    this.pending = [];
    let outcomes: unknown[];
    try {
      outcomes = this.batch(ops);
    } catch (err) {
      for (const op of ops) op.reject(err);
      return;
    }
    ops.forEach((op, i) => (outcomes[i] === undefined ? op.resolve() : op.reject(outcomes[i])));
  }
}
