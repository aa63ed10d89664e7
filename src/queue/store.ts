// The durable queue: messages and their per-recipient delivery state in SQLite (WAL,
// synchronous=FULL). A message is acknowledged to the client only after enqueue() resolves,
// i.e. after its rows (and spool file, if any) are on disk.

import { Database } from "bun:sqlite";
import { openDatabase } from "../sqlite.ts";
import { join } from "node:path";
import type { ContentShape } from "../mime/scan.ts";
import { GroupCommit } from "./group-commit.ts";
import { QueueIdGenerator } from "./id.ts";
import { migrate } from "./schema.ts";
import { Spool } from "./spool.ts";

export interface NewMessage {
  readonly id: string;
  readonly sender: string;
  readonly recipients: readonly { readonly address: string; readonly route: string; readonly notify?: readonly ("NEVER" | "SUCCESS" | "FAILURE" | "DELAY")[] | null; readonly orcpt?: string | null }[];
  /** The header section as it will be sent on (our trace headers first), with its blank line. */
  readonly head: Uint8Array;
  /** What the accept-time scan found (8-bit octets, long lines); absent: not known, delivery checks. */
  readonly content?: ContentShape | null;
  /** The body after the header section, unless it is in the spool. */
  readonly inlineBody: Uint8Array | null;
  readonly size: number;
  readonly receivedAt: number;
  readonly clientIp: string;
  /** The client's BODY= (RFC 6152); null when it gave none. */
  readonly bodyType?: "7BIT" | "8BITMIME" | null;
  /** The client asked for SMTPUTF8 (RFC 6531). */
  readonly smtputf8?: boolean;
  /** RFC 3461 RET and ENVID of the transaction. */
  readonly dsn?: { readonly ret: "FULL" | "HDRS" | null; readonly envid: string | null } | null;
}

/** RFC 3461 NOTIFY keywords; null (no NOTIFY given) means the default, failures (and delays). */
export type Notify = readonly ("NEVER" | "SUCCESS" | "FAILURE" | "DELAY")[] | null;

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
  readonly notify: Notify;
  /** RFC 3461 ORCPT as the client gave it, xtext decoded ("rfc822;bob@example.org"). */
  readonly orcpt: string | null;
  /** The delay warning (RFC 3464 Action: delayed) was sent for this recipient. */
  readonly delayWarned: boolean;
}

export type RecipientOutcome =
  | { readonly kind: "delivered"; readonly rowId: number; readonly response: string }
  | { readonly kind: "deferred"; readonly rowId: number; readonly error: string; readonly nextAttemptAt: number; readonly delayWarned?: boolean }
  | { readonly kind: "failed"; readonly rowId: number; readonly error: string };

export interface MessageSummary {
  readonly id: string;
  readonly sender: string;
  readonly size: number;
  readonly receivedAt: number;
  readonly clientIp: string;
  readonly recipients: number;
  readonly deferred: number;
  readonly nextAttemptAt: number;
  readonly lastError: string | null;
}

export interface RecipientDetail {
  readonly address: string;
  readonly route: string;
  readonly attempts: number;
  readonly nextAttemptAt: number;
  readonly lastError: string | null;
}

export interface ListFilter {
  /** "deferred": at least one recipient failed an attempt; "queued": none has yet. */
  readonly state?: "queued" | "deferred";
  /** Only messages with a recipient in this domain. */
  readonly domain?: string;
  /** Only messages received before this time (ms since the epoch). */
  readonly receivedBefore?: number;
  /** Page after this queue id (ids sort by arrival). */
  readonly after?: string;
  readonly limit: number;
}

export interface StoredBody {
  readonly head: Uint8Array;
  readonly inline: Uint8Array | null;
  readonly spoolPath: string | null;
  readonly size: number;
  readonly bodyType: "7BIT" | "8BITMIME" | null;
  readonly smtputf8: boolean;
  readonly dsn: { readonly ret: "FULL" | "HDRS" | null; readonly envid: string | null } | null;
  /** Null when not known (queued by an older version). */
  readonly content: ContentShape | null;
}

const EIGHT_BIT = 1;
const LONG_LINES = 2;
const contentBits = (c: ContentShape | null | undefined) => (c ? (c.eightBit ? EIGHT_BIT : 0) | (c.longLines ? LONG_LINES : 0) : null);
const contentOf = (bits: number | null): ContentShape | null => (bits === null ? null : { eightBit: (bits & EIGHT_BIT) !== 0, longLines: (bits & LONG_LINES) !== 0 });

type DueRow = {
  id: number; message_id: string; address: string; route: string; attempts: number; sender: string; size: number; received_at: number; next_attempt_at: number;
  notify: string | null; orcpt: string | null; delay_warned: number;
};

function dueRow(r: DueRow): DueRecipient {
  return {
    rowId: r.id,
    messageId: r.message_id,
    address: r.address,
    route: r.route,
    attempts: r.attempts,
    sender: r.sender,
    size: r.size,
    receivedAt: r.received_at,
    nextAttemptAt: r.next_attempt_at,
    notify: r.notify === null ? null : (r.notify.split(",") as ("NEVER" | "SUCCESS" | "FAILURE" | "DELAY")[]),
    orcpt: r.orcpt,
    delayWarned: r.delay_warned !== 0,
  };
}

const DUE_COLUMNS = `r.id, r.message_id, r.address, r.route, r.attempts, r.next_attempt_at, r.notify, r.orcpt, r.delay_warned,
  m.sender, m.size, m.received_at`;

export class QueueStore {
  readonly spool: Spool;
  private readonly ids = new QueueIdGenerator();
  private readonly commits: GroupCommit;
  private readonly q;
  /** While a backup copies the spool, files are not removed but remembered here. */
  private heldRemovals: string[] | null = null;

  private constructor(readonly db: Database, stateDir: string) {
    this.spool = new Spool(join(stateDir, "spool"));
    this.commits = new GroupCommit(db);
    this.q = {
      insertMessage: db.query(
        "INSERT INTO messages (id, sender, size, received_at, client_ip, head, body, body_type, smtputf8, dsn_ret, dsn_envid, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      insertRecipient: db.query("INSERT INTO recipients (message_id, address, route, next_attempt_at, notify, orcpt) VALUES (?, ?, ?, ?, ?, ?)"),
      due: db.query<DueRow, [number, number]>(`SELECT ${DUE_COLUMNS}
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.next_attempt_at <= ? ORDER BY r.next_attempt_at, r.id LIMIT ?`),
      dueAfter: db.query<DueRow, [string, number, number]>(`SELECT ${DUE_COLUMNS}
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.message_id > ? AND r.next_attempt_at <= ? ORDER BY r.message_id, r.id LIMIT ?`),
      nextDue: db.query<{ t: number | null }, []>("SELECT MIN(next_attempt_at) AS t FROM recipients"),
      body: db.query<
        { head: Uint8Array; body: Uint8Array | null; size: number; body_type: "7BIT" | "8BITMIME" | null; smtputf8: number; dsn_ret: "FULL" | "HDRS" | null; dsn_envid: string | null; content: number | null },
        [string]
      >("SELECT head, body, size, body_type, smtputf8, dsn_ret, dsn_envid, content FROM messages WHERE id = ?"),
      deleteRecipient: db.query("DELETE FROM recipients WHERE id = ?"),
      deferRecipient: db.query("UPDATE recipients SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, delay_warned = MAX(delay_warned, ?) WHERE id = ?"),
      remaining: db.query<{ n: number }, [string]>("SELECT COUNT(*) AS n FROM recipients WHERE message_id = ?"),
      deleteMessage: db.query<{ spooled: number }, [string]>("DELETE FROM messages WHERE id = ? RETURNING body IS NULL AS spooled"),
      hasMessage: db.query<{ one: number }, [string]>("SELECT 1 AS one FROM messages WHERE id = ?"),
      byState: db.query<{ state: string; recipients: number }, []>(
        "SELECT CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END AS state, COUNT(*) AS recipients FROM recipients GROUP BY 1",
      ),
      message: db.query<{ id: string; sender: string; size: number; received_at: number; client_ip: string }, [string]>(
        "SELECT id, sender, size, received_at, client_ip FROM messages WHERE id = ?",
      ),
      recipientsOf: db.query<{ address: string; route: string; attempts: number; next_attempt_at: number; last_error: string | null }, [string]>(
        "SELECT address, route, attempts, next_attempt_at, last_error FROM recipients WHERE message_id = ? ORDER BY id",
      ),
      retryMessage: db.query<unknown, [number, string, number]>("UPDATE recipients SET next_attempt_at = ? WHERE message_id = ? AND next_attempt_at > ?"),
      retryAll: db.query<unknown, [number, number]>("UPDATE recipients SET next_attempt_at = ? WHERE next_attempt_at > ?"),
      depth: db.query<{ messages: number; recipients: number; deferred: number }, []>(
        `SELECT (SELECT COUNT(*) FROM messages) AS messages, COUNT(*) AS recipients,
                COALESCE(SUM(attempts > 0), 0) AS deferred FROM recipients`,
      ),
    };
  }

  static open(stateDir: string): QueueStore {
    // WAL + FULL: every commit fsyncs the WAL, so a 250 reply survives power loss.
    const db = openDatabase(join(stateDir, "queue.db"), "FULL");
    db.run("PRAGMA foreign_keys = ON");
    migrate(db);
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
    const spooled: string[] = [];
    await this.commits.submit(() => {
      finished.length = 0;
      spooled.length = 0;
      for (const o of outcomes) {
        if (o.kind === "deferred") this.q.deferRecipient.run(o.nextAttemptAt, o.error, o.delayWarned ? 1 : 0, o.rowId);
        else this.q.deleteRecipient.run(o.rowId);
      }
      for (const b of bounces) this.insert(b);
      for (const id of new Set(messageIds)) {
        if (this.q.remaining.get(id)!.n !== 0) continue;
        finished.push(id);
        // Only a message whose body was spooled has a file to remove afterwards.
        if (this.q.deleteMessage.get(id)?.spooled) spooled.push(id);
      }
    });
    // The row is gone for good; a crash before this unlink leaves an orphan that start-up removes.
    for (const id of spooled) this.removeSpool(id);
    return finished;
  }

  /** Removes a message and all its recipients, queuing the given bounces in the same commit. */
  async remove(messageId: string, bounces: readonly NewMessage[]): Promise<boolean> {
    let found = false;
    await this.commits.submit(() => {
      found = this.q.hasMessage.get(messageId) !== null;
      if (!found) return;
      this.q.deleteMessage.get(messageId);
      for (const b of bounces) this.insert(b);
    });
    if (found) this.removeSpool(messageId);
    return found;
  }

  /** Makes every recipient of a message (or of every message) due now; returns how many. */
  async retryNow(messageId: string | null, now = Date.now()): Promise<number> {
    let changed = 0;
    await this.commits.submit(() => {
      changed = (messageId === null ? this.q.retryAll.run(now, now) : this.q.retryMessage.run(now, messageId, now)).changes;
    });
    return changed;
  }

  message(id: string): { summary: MessageSummary; recipients: RecipientDetail[] } | null {
    const m = this.q.message.get(id);
    if (!m) return null;
    const recipients = this.q.recipientsOf.all(id).map((r) => ({
      address: r.address,
      route: r.route,
      attempts: r.attempts,
      nextAttemptAt: r.next_attempt_at,
      lastError: r.last_error,
    }));
    return {
      summary: {
        id: m.id,
        sender: m.sender,
        size: m.size,
        receivedAt: m.received_at,
        clientIp: m.client_ip,
        recipients: recipients.length,
        deferred: recipients.filter((r) => r.attempts > 0).length,
        nextAttemptAt: Math.min(...recipients.map((r) => r.nextAttemptAt)),
        lastError: recipients.find((r) => r.lastError)?.lastError ?? null,
      },
      recipients,
    };
  }

  list(f: ListFilter): MessageSummary[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (f.after) (where.push("m.id > ?"), args.push(f.after));
    if (f.receivedBefore !== undefined) (where.push("m.received_at < ?"), args.push(f.receivedBefore));
    if (f.domain) (where.push("EXISTS (SELECT 1 FROM recipients d WHERE d.message_id = m.id AND lower(d.address) LIKE ? ESCAPE '\\')"), args.push(`%@${f.domain.toLowerCase().replace(/[\\%_]/g, "\\$&")}`));
    const having = f.state === "deferred" ? "HAVING deferred > 0" : f.state === "queued" ? "HAVING deferred = 0" : "";
    const sql = `SELECT m.id, m.sender, m.size, m.received_at, m.client_ip, COUNT(r.id) AS recipients,
        COALESCE(SUM(r.attempts > 0), 0) AS deferred, MIN(r.next_attempt_at) AS next_attempt_at, MAX(r.last_error) AS last_error
      FROM messages m JOIN recipients r ON r.message_id = m.id
      ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
      GROUP BY m.id ${having} ORDER BY m.id LIMIT ?`;
    type Row = { id: string; sender: string; size: number; received_at: number; client_ip: string; recipients: number; deferred: number; next_attempt_at: number; last_error: string | null };
    return this.db.query<Row, (string | number)[]>(sql).all(...args, f.limit).map((r) => ({
      id: r.id,
      sender: r.sender,
      size: r.size,
      receivedAt: r.received_at,
      clientIp: r.client_ip,
      recipients: r.recipients,
      deferred: r.deferred,
      nextAttemptAt: r.next_attempt_at,
      lastError: r.last_error,
    }));
  }

  depthByState(): { state: string; recipients: number }[] {
    return this.q.byState.all();
  }

  /** True when the database takes a write lock (readiness). */
  writable(): boolean {
    try {
      this.db.run("BEGIN IMMEDIATE");
      this.db.run("ROLLBACK");
      return true;
    } catch {
      return false;
    }
  }

  /** Keeps spool files in place until the returned function is called (for a consistent backup). */
  holdSpoolRemovals(): () => void {
    this.heldRemovals ??= [];
    return () => {
      const held = this.heldRemovals ?? [];
      this.heldRemovals = null;
      for (const id of held) this.spool.remove(id);
    };
  }

  private removeSpool(id: string): void {
    if (this.heldRemovals) this.heldRemovals.push(id);
    else this.spool.remove(id);
  }

  /**
   * Due recipients of messages queued after `afterMessageId` (queue ids sort by arrival; row
   * ids do not, SQLite reuses them): new mail without rereading what is already in hand. A
   * message cut in two by the limit is left out whole, unless it is the only one.
   */
  dueAfter(afterMessageId: string, now: number, limit: number): DueRecipient[] {
    const rows = this.q.dueAfter.all(afterMessageId, now, limit).map(dueRow);
    if (rows.length < limit) return rows;
    const last = rows[rows.length - 1]!.messageId;
    const whole = rows.filter((r) => r.messageId !== last);
    return whole.length ? whole : rows;
  }

  due(now: number, limit: number): DueRecipient[] {
    return this.q.due.all(now, limit).map(dueRow);
  }

  /** The earliest scheduled attempt, or null when the queue is empty. */
  nextDueAt(): number | null {
    return this.q.nextDue.get()?.t ?? null;
  }

  body(messageId: string): StoredBody {
    const row = this.q.body.get(messageId);
    if (!row) throw new Error(`message ${messageId} is not in the queue`);
    return {
      head: row.head,
      inline: row.body,
      spoolPath: row.body ? null : this.spool.pathOf(messageId),
      size: row.size,
      bodyType: row.body_type,
      smtputf8: row.smtputf8 !== 0,
      dsn: row.dsn_ret === null && row.dsn_envid === null ? null : { ret: row.dsn_ret, envid: row.dsn_envid },
      content: contentOf(row.content),
    };
  }

  depth(): { messages: number; recipients: number; deferred: number } {
    return this.q.depth.get()!;
  }

  /** When the oldest queued message arrived, or null when the queue is empty. Ids grow with time, so this reads one index entry. */
  oldestReceivedAt(): number | null {
    return this.db.query<{ t: number }, []>("SELECT received_at AS t FROM messages ORDER BY id LIMIT 1").get()?.t ?? null;
  }

  close(): void {
    this.commits.flush();
    this.db.close();
  }

  private insert(msg: NewMessage): void {
    const dsn = msg.dsn ?? null;
    this.q.insertMessage.run(
      msg.id, msg.sender, msg.size, msg.receivedAt, msg.clientIp, msg.head, msg.inlineBody,
      msg.bodyType ?? null, msg.smtputf8 ? 1 : 0, dsn?.ret ?? null, dsn?.envid ?? null, contentBits(msg.content),
    );
    for (const r of msg.recipients) this.q.insertRecipient.run(msg.id, r.address, r.route, msg.receivedAt, r.notify?.length ? r.notify.join(",") : null, r.orcpt ?? null);
  }
}
