// The durable queue: messages and their per-recipient delivery state in SQLite (WAL,
// synchronous=FULL). A message is acknowledged to the client only after enqueue() resolves,
// i.e. after its rows (and spool file, if any) are on disk.

import { Database } from "bun:sqlite";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { GroupCommit } from "./group-commit.ts";
import { QueueIdGenerator } from "./id.ts";
import { Spool } from "./spool.ts";

export interface NewMessage {
  readonly id: string;
  readonly sender: string;
  readonly recipients: readonly { readonly address: string; readonly route: string }[];
  /** The whole message as it will be sent on, trace header included, unless it is in the spool. */
  readonly inlineBody: Uint8Array | null;
  readonly size: number;
  readonly receivedAt: number;
  readonly clientIp: string;
}

export interface DueRecipient {
  readonly rowId: number;
  readonly messageId: string;
  readonly address: string;
  readonly route: string;
  readonly attempts: number;
  readonly sender: string;
  readonly size: number;
  readonly receivedAt: number;
  readonly nextAttemptAt: number;
}

export type RecipientOutcome =
  | { readonly kind: "delivered"; readonly rowId: number; readonly response: string }
  | { readonly kind: "deferred"; readonly rowId: number; readonly error: string; readonly nextAttemptAt: number }
  | { readonly kind: "failed"; readonly rowId: number; readonly error: string };

export interface StoredBody {
  readonly inline: Uint8Array | null;
  readonly spoolPath: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  client_ip TEXT NOT NULL,
  body BLOB
) STRICT;
CREATE TABLE IF NOT EXISTS recipients (
  id INTEGER PRIMARY KEY,
  message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  address TEXT NOT NULL,
  route TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(next_attempt_at);
CREATE INDEX IF NOT EXISTS recipients_message ON recipients(message_id);
`;

export class QueueStore {
  readonly spool: Spool;
  private readonly ids = new QueueIdGenerator();
  private readonly commits: GroupCommit;
  private readonly q;

  private constructor(readonly db: Database, stateDir: string) {
    this.spool = new Spool(join(stateDir, "spool"));
    this.commits = new GroupCommit(db);
    this.q = {
      insertMessage: db.query("INSERT INTO messages (id, sender, size, received_at, client_ip, body) VALUES (?, ?, ?, ?, ?, ?)"),
      insertRecipient: db.query("INSERT INTO recipients (message_id, address, route, next_attempt_at) VALUES (?, ?, ?, ?)"),
      due: db.query<
        { id: number; message_id: string; address: string; route: string; attempts: number; sender: string; size: number; received_at: number; next_attempt_at: number },
        [number, number]
      >(`SELECT r.id, r.message_id, r.address, r.route, r.attempts, r.next_attempt_at, m.sender, m.size, m.received_at
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.next_attempt_at <= ? ORDER BY r.next_attempt_at, r.id LIMIT ?`),
      nextDue: db.query<{ t: number | null }, []>("SELECT MIN(next_attempt_at) AS t FROM recipients"),
      body: db.query<{ body: Uint8Array | null }, [string]>("SELECT body FROM messages WHERE id = ?"),
      deleteRecipient: db.query("DELETE FROM recipients WHERE id = ?"),
      deferRecipient: db.query("UPDATE recipients SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?"),
      remaining: db.query<{ n: number }, [string]>("SELECT COUNT(*) AS n FROM recipients WHERE message_id = ?"),
      deleteMessage: db.query("DELETE FROM messages WHERE id = ?"),
      hasMessage: db.query<{ one: number }, [string]>("SELECT 1 AS one FROM messages WHERE id = ?"),
      depth: db.query<{ messages: number; recipients: number; deferred: number }, []>(
        `SELECT (SELECT COUNT(*) FROM messages) AS messages, COUNT(*) AS recipients,
                COALESCE(SUM(attempts > 0), 0) AS deferred FROM recipients`,
      ),
    };
  }

  static open(stateDir: string): QueueStore {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    // The queue holds addresses and message bodies: 0600. SQLite gives the -wal and -shm
    // files the mode of the database file, so creating that one first covers all three.
    const path = join(stateDir, "queue.db");
    closeSync(openSync(path, "a", 0o600));
    const db = new Database(path, { create: true, strict: true });
    // WAL + FULL: every commit fsyncs the WAL, so a 250 reply survives power loss.
    db.run("PRAGMA journal_mode = WAL");
    db.run("PRAGMA synchronous = FULL");
    db.run("PRAGMA foreign_keys = ON");
    db.run("PRAGMA busy_timeout = 5000");
    db.run(SCHEMA);
    const store = new QueueStore(db, stateDir);
    store.spool.removeOrphans((id) => store.q.hasMessage.get(id) !== null);
    return store;
  }

  /** A new queue id, for a message about to be enqueued. */
  newId(now = Date.now()): string {
    return this.ids.next(now);
  }

  /** Commits the message; the body is either inline or already durable in the spool. */
  enqueue(msg: NewMessage): Promise<void> {
    return this.commits.submit(() => this.insert(msg));
  }

  /** Commits the outcomes of one delivery attempt and any bounces they produced, atomically. */
  async record(outcomes: readonly RecipientOutcome[], bounces: readonly NewMessage[], messageIds: readonly string[]): Promise<string[]> {
    const finished: string[] = [];
    await this.commits.submit(() => {
      finished.length = 0;
      for (const o of outcomes) {
        if (o.kind === "deferred") this.q.deferRecipient.run(o.nextAttemptAt, o.error, o.rowId);
        else this.q.deleteRecipient.run(o.rowId);
      }
      for (const b of bounces) this.insert(b);
      for (const id of new Set(messageIds)) {
        if (this.q.remaining.get(id)!.n === 0) {
          this.q.deleteMessage.run(id);
          finished.push(id);
        }
      }
    });
    // The row is gone for good; a crash before this unlink leaves an orphan that start-up removes.
    for (const id of finished) this.spool.remove(id);
    return finished;
  }

  due(now: number, limit: number): DueRecipient[] {
    return this.q.due.all(now, limit).map((r) => ({
      rowId: r.id,
      messageId: r.message_id,
      address: r.address,
      route: r.route,
      attempts: r.attempts,
      sender: r.sender,
      size: r.size,
      receivedAt: r.received_at,
      nextAttemptAt: r.next_attempt_at,
    }));
  }

  /** The earliest scheduled attempt, or null when the queue is empty. */
  nextDueAt(): number | null {
    return this.q.nextDue.get()?.t ?? null;
  }

  body(messageId: string): StoredBody {
    const row = this.q.body.get(messageId);
    if (!row) throw new Error(`message ${messageId} is not in the queue`);
    return row.body ? { inline: row.body, spoolPath: null } : { inline: null, spoolPath: this.spool.pathOf(messageId) };
  }

  depth(): { messages: number; recipients: number; deferred: number } {
    return this.q.depth.get()!;
  }

  close(): void {
    this.commits.flush();
    this.db.close();
  }

  private insert(msg: NewMessage): void {
    this.q.insertMessage.run(msg.id, msg.sender, msg.size, msg.receivedAt, msg.clientIp, msg.inlineBody);
    for (const r of msg.recipients) this.q.insertRecipient.run(msg.id, r.address, r.route, msg.receivedAt);
  }
}
