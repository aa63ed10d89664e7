// Group commit: writes requested during one turn of the event loop share one SQLite
// transaction and so one fsync of the WAL. Each request runs in its own savepoint, so a
// failing request is rejected alone and the others still commit; a failure that takes the
// whole transaction with it fails every request of the group, and none runs after it.
//
// bun:sqlite is synchronous, so the commit blocks the loop for one fsync; while it does,
// further requests pile up in the sockets and form the next, larger group.

import type { Database } from "bun:sqlite";

/** One write ended the whole transaction; `cause` is what it threw. */
class TransactionLost extends Error {
  constructor(override readonly cause: unknown) {
    super("the transaction was rolled back");
  }
}

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
          // Some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM, a ROLLBACK) end the whole
          // transaction, not just the savepoint: the writes before this one are gone, and the
          // ones after it would run outside any transaction, each committed on its own while
          // its client is told 451. Stop here: the batch fails as a whole and nothing more runs.
          if (!db.inTransaction) throw new TransactionLost(err);
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
      const cause = err instanceof TransactionLost ? err.cause : err;
      for (const op of ops) op.reject(cause);
      return;
    }
    ops.forEach((op, i) => (outcomes[i] === undefined ? op.resolve() : op.reject(outcomes[i])));
  }
}
