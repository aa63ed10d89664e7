// The queue database's tables, and the migration that brings a queue written by an older
// mailraven up to date at start-up (in place, in one transaction).
//
// Version 2 stores the envelope parameters of the transaction (RFC 6152 BODY=, RFC 6531
// SMTPUTF8, RFC 3461 RET/ENVID and per recipient NOTIFY/ORCPT), what the accept-time scan
// learned about the content (8-bit octets, lines over 998 octets), and whether a recipient
// was sent its delay warning.

import type { Database } from "bun:sqlite";

export const SCHEMA_VERSION = 2;

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  client_ip TEXT NOT NULL,
  head BLOB NOT NULL,
  body BLOB,
  body_type TEXT CHECK (body_type IN ('7BIT', '8BITMIME')),
  smtputf8 INTEGER NOT NULL DEFAULT 0,
  dsn_ret TEXT CHECK (dsn_ret IN ('FULL', 'HDRS')),
  dsn_envid TEXT,
  content INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS recipients (
  id INTEGER PRIMARY KEY,
  message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  address TEXT NOT NULL,
  route TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT,
  notify TEXT,
  orcpt TEXT,
  delay_warned INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(next_attempt_at);
CREATE INDEX IF NOT EXISTS recipients_message ON recipients(message_id);
`;

/** Columns added after version 0, with their definitions; a queue missing one gets it. */
const ADDED: Record<"messages" | "recipients", [string, string][]> = {
  messages: [
    // Version 0 kept the whole message in body; an empty head in front of it is the same message.
    ["head", "BLOB NOT NULL DEFAULT x''"],
    ["body_type", "TEXT CHECK (body_type IN ('7BIT', '8BITMIME'))"],
    ["smtputf8", "INTEGER NOT NULL DEFAULT 0"],
    ["dsn_ret", "TEXT CHECK (dsn_ret IN ('FULL', 'HDRS'))"],
    ["dsn_envid", "TEXT"],
    // NULL: not scanned (queued by version 1); delivery then treats the content as unknown.
    ["content", "INTEGER"],
  ],
  recipients: [
    ["notify", "TEXT"],
    ["orcpt", "TEXT"],
    ["delay_warned", "INTEGER NOT NULL DEFAULT 0"],
  ],
};

/** Creates the tables, or brings a queue written by an older version up to date, in place. */
export function migrate(db: Database): void {
  db.run(SCHEMA);
  const version = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version;
  if (version > SCHEMA_VERSION) throw new Error(`queue.db is from a newer mailraven (schema ${version}); upgrade mailraven or restore an older backup`);
  if (version === SCHEMA_VERSION) return;
  db.transaction(() => {
    for (const [table, columns] of Object.entries(ADDED)) {
      const present = new Set(db.query<{ name: string }, []>(`PRAGMA table_info(${table})`).all().map((c) => c.name));
      for (const [name, definition] of columns) if (!present.has(name)) db.run(`ALTER TABLE ${table} ADD COLUMN ${name} ${definition}`);
    }
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  })();
}
