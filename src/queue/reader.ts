// The read side of the queue: what is due for delivery and the stored message to send. The
// delivery thread opens its own connection with it (WAL lets it read while the SMTP thread
// commits); the queue store on the SMTP thread uses the same queries. It never writes:
// outcomes go back to the store's group commit (deliver/thread.ts).

import type { Database } from "bun:sqlite";
import { join } from "node:path";
import type { ContentShape } from "../mime/scan.ts";
import { openDatabase } from "../sqlite.ts";

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
export const contentBits = (c: ContentShape | null | undefined) => (c ? (c.eightBit ? EIGHT_BIT : 0) | (c.longLines ? LONG_LINES : 0) : null);
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

type BodyRow = { head: Uint8Array; body: Uint8Array | null; size: number; body_type: "7BIT" | "8BITMIME" | null; smtputf8: number; dsn_ret: "FULL" | "HDRS" | null; dsn_envid: string | null; content: number | null };

export class QueueReader {
  private readonly q;

  constructor(db: Database, private readonly spoolDir: string) {
    this.q = {
      due: db.query<DueRow, [number, number]>(`SELECT ${DUE_COLUMNS}
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.next_attempt_at <= ? ORDER BY r.next_attempt_at, r.id LIMIT ?`),
      dueAfter: db.query<DueRow, [string, number, number]>(`SELECT ${DUE_COLUMNS}
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.message_id > ? AND r.next_attempt_at <= ? ORDER BY r.message_id, r.id LIMIT ?`),
      nextDue: db.query<{ t: number | null }, []>("SELECT MIN(next_attempt_at) AS t FROM recipients"),
      body: db.query<BodyRow, [string]>("SELECT head, body, size, body_type, smtputf8, dsn_ret, dsn_envid, content FROM messages WHERE id = ?"),
    };
  }

  /** A connection of its own to the queue of `stateDir` that refuses to write (query_only). */
  static open(stateDir: string): { reader: QueueReader; db: Database } {
    const db = openDatabase(join(stateDir, "queue.db"), "FULL");
    db.run("PRAGMA query_only = ON");
    return { reader: new QueueReader(db, join(stateDir, "spool")), db };
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
      spoolPath: row.body ? null : join(this.spoolDir, messageId),
      size: row.size,
      bodyType: row.body_type,
      smtputf8: row.smtputf8 !== 0,
      dsn: row.dsn_ret === null && row.dsn_envid === null ? null : { ret: row.dsn_ret, envid: row.dsn_envid },
      content: contentOf(row.content),
    };
  }
}
