// Schema version 2: the envelope parameters (BODY=, SMTPUTF8, RET/ENVID, NOTIFY/ORCPT), the
// accept-time content scan and the delay-warning mark are stored and read back, and a queue
// written by version 1 is migrated in place at start-up without losing its messages.

import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QueueStore, type NewMessage } from "../../src/queue/store.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-params-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => join(root, `s${n++}`);
const T0 = Date.UTC(2026, 0, 5, 12);
const enc = new TextEncoder();

function message(store: QueueStore, over: Partial<NewMessage> = {}): NewMessage {
  const head = enc.encode("Subject: params\r\n\r\n");
  const body = enc.encode("hello\r\n");
  return {
    id: store.newId(T0),
    sender: "alice@example.org",
    recipients: [{ address: "bob@example.net", route: "smtp://10.0.0.5" }],
    head,
    inlineBody: body,
    size: head.length + body.length,
    receivedAt: T0,
    clientIp: "192.0.2.1",
    ...over,
  };
}

/** The version 1 tables, as mailraven before schema 2 created them. */
const V1 = `
CREATE TABLE messages (id TEXT PRIMARY KEY, sender TEXT NOT NULL, size INTEGER NOT NULL, received_at INTEGER NOT NULL,
  client_ip TEXT NOT NULL, head BLOB NOT NULL, body BLOB) STRICT;
CREATE TABLE recipients (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  address TEXT NOT NULL, route TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_error TEXT) STRICT;
CREATE INDEX recipients_due ON recipients(next_attempt_at);
CREATE INDEX recipients_message ON recipients(message_id);
PRAGMA user_version = 1;
`;

describe("schema version 2", () => {
  test("envelope parameters and the content scan are stored per message and per recipient", async () => {
    const store = QueueStore.open(freshDir());
    try {
      const m = message(store, {
        bodyType: "8BITMIME",
        smtputf8: true,
        dsn: { ret: "HDRS", envid: "QQ314159" },
        content: { eightBit: true, longLines: false },
        recipients: [
          { address: "bob@example.net", route: "smtp://10.0.0.5", notify: ["SUCCESS", "DELAY"], orcpt: "rfc822;bob+x@example.net" },
          { address: "carol@example.net", route: "smtp://10.0.0.5" },
        ],
      });
      await store.enqueue(m);
      const due = store.due(T0, 10);
      expect(due.map((r) => [r.address, r.notify, r.orcpt, r.delayWarned])).toEqual([
        ["bob@example.net", ["SUCCESS", "DELAY"], "rfc822;bob+x@example.net", false],
        ["carol@example.net", null, null, false],
      ]);
      const body = store.body(m.id);
      expect([body.bodyType, body.smtputf8, body.dsn, body.content, body.size]).toEqual(["8BITMIME", true, { ret: "HDRS", envid: "QQ314159" }, { eightBit: true, longLines: false }, m.size]);

      // A message without any of them reads back as "not given".
      const plain = message(store);
      await store.enqueue(plain);
      const b2 = store.body(plain.id);
      expect([b2.bodyType, b2.smtputf8, b2.dsn, b2.content]).toEqual([null, false, null, null]);
    } finally {
      store.close();
    }
  });

  test("a deferral can mark the delay warning as sent; it stays marked on later deferrals", async () => {
    const store = QueueStore.open(freshDir());
    try {
      const m = message(store);
      await store.enqueue(m);
      const [r] = store.due(T0, 10);
      await store.record([{ kind: "deferred", rowId: r!.rowId, error: "451 4.3.0 later", nextAttemptAt: T0 + 1, delayWarned: true }], [], [m.id]);
      expect(store.due(T0 + 1, 10)[0]!.delayWarned).toBe(true);
      await store.record([{ kind: "deferred", rowId: r!.rowId, error: "451 4.3.0 later", nextAttemptAt: T0 + 2 }], [], [m.id]);
      expect(store.due(T0 + 2, 10)[0]).toMatchObject({ delayWarned: true, attempts: 2 });
    } finally {
      store.close();
    }
  });

  test("the tables are STRICT and refuse values outside the RFC keywords", () => {
    const dir = freshDir();
    QueueStore.open(dir).close();
    const db = new Database(join(dir, "queue.db"));
    try {
      const strict = db.query<{ name: string; strict: number }, []>("SELECT name, strict FROM pragma_table_list WHERE name IN ('messages', 'recipients') ORDER BY name").all();
      expect(strict).toEqual([{ name: "messages", strict: 1 }, { name: "recipients", strict: 1 }]);
      expect(() => db.run("INSERT INTO messages (id, sender, size, received_at, client_ip, head, body_type) VALUES ('x', '', 1, 1, '', x'', '8BIT')")).toThrow(/CHECK/);
      expect(() => db.run("INSERT INTO messages (id, sender, size, received_at, client_ip, head, dsn_ret) VALUES ('y', '', 1, 1, '', x'', 'ALL')")).toThrow(/CHECK/);
    } finally {
      db.close();
    }
  });
});

describe("migration from version 1", () => {
  test("a version 1 queue gets the new columns at start-up; its messages stay deliverable, content unknown", async () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true });
    const old = new Database(join(dir, "queue.db"));
    old.run(V1);
    old.run("INSERT INTO messages VALUES ('0OLD1', 'alice@example.org', 20, ?, '192.0.2.1', CAST('Subject: old' || char(13,10,13,10) AS BLOB), CAST('hi' AS BLOB))", [T0]);
    old.run("INSERT INTO recipients (message_id, address, route, attempts, next_attempt_at, last_error) VALUES ('0OLD1', 'bob@example.net', 'smtp://10.0.0.5', 3, ?, '451 try later')", [T0]);
    old.close();

    const store = QueueStore.open(dir);
    try {
      expect(store.db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version).toBe(2);
      const [r] = store.due(T0, 10);
      expect(r).toMatchObject({ messageId: "0OLD1", address: "bob@example.net", attempts: 3, notify: null, orcpt: null, delayWarned: false });
      const body = store.body("0OLD1");
      expect(Buffer.from(body.head).toString()).toBe("Subject: old\r\n\r\n");
      expect([body.bodyType, body.smtputf8, body.dsn, body.content]).toEqual([null, false, null, null]);
      // New mail goes into the migrated tables with its parameters.
      const m = message(store, { bodyType: "7BIT", recipients: [{ address: "x@example.net", route: "smtp://10.0.0.5", notify: ["NEVER"] }] });
      await store.enqueue(m);
      expect(store.due(T0, 10).find((d) => d.messageId === m.id)!.notify).toEqual(["NEVER"]);
    } finally {
      store.close();
    }
    // Opening again is a no-op (already version 2).
    QueueStore.open(dir).close();
  });

  test("a queue from a newer mailraven is refused with a clear message", () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true });
    const db = new Database(join(dir, "queue.db"));
    db.run("PRAGMA user_version = 3");
    db.close();
    expect(() => QueueStore.open(dir)).toThrow(/newer mailraven \(schema 3\)/);
  });
});
