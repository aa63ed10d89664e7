import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QueueIdGenerator } from "../../src/queue/id.ts";

const ids = new QueueIdGenerator();
const newQueueId = (t: number) => ids.next(t);
import { QueueStore, type NewMessage } from "../../src/queue/store.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-store-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dirs = 0;
const freshDir = () => join(root, `state${dirs++}`);
const T0 = Date.UTC(2024, 2, 5, 12);
const enc = new TextEncoder();

function message(over: Partial<NewMessage> = {}): NewMessage {
  const head = enc.encode("Subject: test\r\n\r\n");
  const body = enc.encode("hello\r\n");
  return {
    head,
    id: newQueueId(T0),
    sender: "alice@example.org",
    recipients: [
      { address: "bob@relayed.example", route: "smtp://10.0.0.5" },
      { address: "carol@relayed.example", route: "smtp://10.0.0.5" },
    ],
    inlineBody: body,
    size: head.length + body.length,
    receivedAt: T0,
    clientIp: "192.0.2.10",
    ...over,
  };
}

/** Opens a store in a fresh directory, runs `fn`, closes it. */
async function withStore(fn: (store: QueueStore, dir: string) => Promise<void> | void): Promise<void> {
  const dir = freshDir();
  const store = QueueStore.open(dir);
  try {
    await fn(store, dir);
  } finally {
    store.close();
  }
}

/** Writes a spooled body the way BodyCollector does, and returns the message naming it. */
async function spooledMessage(store: QueueStore, content: string): Promise<NewMessage> {
  const m = message({ inlineBody: null, size: content.length });
  const w = store.spool.create(m.id);
  w.write(enc.encode(content));
  await w.commit();
  return m;
}

describe("enqueue and due", () => {
  test("an enqueued message's recipients are due at once, with the envelope", async () => {
    await withStore(async (store) => {
      const m = message();
      await store.enqueue(m);
      const due = store.due(T0, 100);
      expect(due).toHaveLength(2);
      expect(due.map((r) => r.address)).toEqual(["bob@relayed.example", "carol@relayed.example"]);
      for (const r of due) {
        expect(r).toMatchObject({ messageId: m.id, route: "smtp://10.0.0.5", attempts: 0, sender: "alice@example.org", size: m.size, receivedAt: T0, nextAttemptAt: T0 });
      }
      expect(new Set(due.map((r) => r.rowId)).size).toBe(2);
      expect(store.depth()).toEqual({ messages: 1, recipients: 2, deferred: 0 });
      expect(store.nextDueAt()).toBe(T0);
    });
  });

  test("nothing is due before the message was received, and limit is respected", async () => {
    await withStore(async (store) => {
      await store.enqueue(message());
      expect(store.due(T0 - 1, 100)).toEqual([]);
      expect(store.due(T0, 1)).toHaveLength(1);
    });
  });

  test("the null sender (a bounce) is stored as the empty string", async () => {
    await withStore(async (store) => {
      await store.enqueue(message({ sender: "" }));
      expect(store.due(T0, 10)[0]!.sender).toBe("");
    });
  });

  test("an empty queue", async () => {
    await withStore((store) => {
      expect(store.due(Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
      expect(store.nextDueAt()).toBeNull();
      expect(store.depth()).toEqual({ messages: 0, recipients: 0, deferred: 0 });
    });
  });

  test("inline bodies come back byte for byte", async () => {
    await withStore(async (store) => {
      const m = message();
      await store.enqueue(m);
      const b = store.body(m.id);
      expect(b.spoolPath).toBeNull();
      expect(new Uint8Array(b.inline!)).toEqual(new Uint8Array(m.inlineBody!));
    });
  });

  test("spooled bodies are named by path", async () => {
    await withStore(async (store) => {
      const m = await spooledMessage(store, "Subject: big\r\n\r\n" + "x".repeat(1000));
      await store.enqueue(m);
      const b = store.body(m.id);
      expect(b.inline).toBeNull();
      expect(b.spoolPath).toBe(join(store.spool.dir, m.id));
      expect(existsSync(b.spoolPath!)).toBe(true);
    });
  });

  test("body() of an unknown message throws", async () => {
    await withStore((store) => {
      expect(() => store.body("0000000000000000")).toThrow(/not in the queue/);
    });
  });
});

describe("record", () => {
  test("delivered: the recipient leaves the queue; the message stays while another recipient remains", async () => {
    await withStore(async (store) => {
      const m = message();
      await store.enqueue(m);
      const [bob, carol] = store.due(T0, 10);
      expect(await store.record([{ kind: "delivered", rowId: bob!.rowId, response: "250 ok" }], [], [m.id])).toEqual([]);
      expect(store.due(T0, 10).map((r) => r.address)).toEqual(["carol@relayed.example"]);
      expect(store.depth().messages).toBe(1);
      expect(store.body(m.id).inline).not.toBeNull();

      expect(await store.record([{ kind: "delivered", rowId: carol!.rowId, response: "250 ok" }], [], [m.id])).toEqual([m.id]);
      expect(store.due(T0, 10)).toEqual([]);
      expect(store.depth()).toEqual({ messages: 0, recipients: 0, deferred: 0 });
      expect(() => store.body(m.id)).toThrow();
    });
  });

  test("deferred: attempts go up and the recipient waits until next_attempt_at", async () => {
    await withStore(async (store) => {
      const m = message({ recipients: [{ address: "bob@relayed.example", route: "smtp://10.0.0.5" }] });
      await store.enqueue(m);
      const [bob] = store.due(T0, 10);
      const retryAt = T0 + 300_000;
      expect(await store.record([{ kind: "deferred", rowId: bob!.rowId, error: "451 4.3.0 try later", nextAttemptAt: retryAt }], [], [m.id])).toEqual([]);
      expect(store.due(retryAt - 1, 10)).toEqual([]);
      expect(store.due(retryAt, 10)).toEqual([expect.objectContaining({ rowId: bob!.rowId, attempts: 1, nextAttemptAt: retryAt })]);
      expect(store.nextDueAt()).toBe(retryAt);
      expect(store.depth()).toEqual({ messages: 1, recipients: 1, deferred: 1 });
      const row = store.db.query<{ last_error: string }, [number]>("SELECT last_error FROM recipients WHERE id = ?").get(bob!.rowId);
      expect(row?.last_error).toBe("451 4.3.0 try later");

      await store.record([{ kind: "deferred", rowId: bob!.rowId, error: "again", nextAttemptAt: retryAt + 900_000 }], [], [m.id]);
      expect(store.due(retryAt + 900_000, 10)[0]).toMatchObject({ attempts: 2, nextAttemptAt: retryAt + 900_000 });
    });
  });

  test("failed: the recipient leaves the queue and the message with it", async () => {
    await withStore(async (store) => {
      const m = message({ recipients: [{ address: "bob@relayed.example", route: "smtp://10.0.0.5" }] });
      await store.enqueue(m);
      const [bob] = store.due(T0, 10);
      expect(await store.record([{ kind: "failed", rowId: bob!.rowId, error: "550 5.1.1 unknown" }], [], [m.id])).toEqual([m.id]);
      expect(store.depth()).toEqual({ messages: 0, recipients: 0, deferred: 0 });
    });
  });

  test("mixed outcomes in one record", async () => {
    await withStore(async (store) => {
      const m = message({
        recipients: ["a", "b", "c"].map((u) => ({ address: `${u}@relayed.example`, route: "smtp://10.0.0.5" })),
      });
      await store.enqueue(m);
      const [a, b, c] = store.due(T0, 10);
      const finished = await store.record(
        [
          { kind: "delivered", rowId: a!.rowId, response: "250 ok" },
          { kind: "deferred", rowId: b!.rowId, error: "451", nextAttemptAt: T0 + 1000 },
          { kind: "failed", rowId: c!.rowId, error: "550" },
        ],
        [],
        [m.id, m.id],
      );
      expect(finished).toEqual([]);
      expect(store.due(T0 + 1000, 10).map((r) => [r.address, r.attempts])).toEqual([["b@relayed.example", 1]]);
    });
  });

  test("the spool file is removed once the message leaves the queue, not before", async () => {
    await withStore(async (store) => {
      const m = await spooledMessage(store, "Subject: big\r\n\r\n" + "y".repeat(5000));
      await store.enqueue(m);
      const path = store.body(m.id).spoolPath!;
      const [bob, carol] = store.due(T0, 10);
      await store.record([{ kind: "delivered", rowId: bob!.rowId, response: "250" }], [], [m.id]);
      expect(existsSync(path)).toBe(true);
      await store.record([{ kind: "failed", rowId: carol!.rowId, error: "550" }], [], [m.id]);
      expect(existsSync(path)).toBe(false);
      expect(readdirSync(store.spool.dir)).toEqual([]);
    });
  });

  test("bounces are inserted with the outcomes", async () => {
    await withStore(async (store) => {
      const m = message({ recipients: [{ address: "bob@relayed.example", route: "smtp://10.0.0.5" }] });
      await store.enqueue(m);
      const [bob] = store.due(T0, 10);
      const bounce = message({ id: newQueueId(T0 + 5000), sender: "", recipients: [{ address: "alice@example.org", route: "smtp://10.0.0.9" }], receivedAt: T0 + 5000 });
      expect(await store.record([{ kind: "failed", rowId: bob!.rowId, error: "550" }], [bounce], [m.id])).toEqual([m.id]);
      const due = store.due(T0 + 5000, 10);
      expect(due).toEqual([expect.objectContaining({ messageId: bounce.id, address: "alice@example.org", route: "smtp://10.0.0.9", sender: "", attempts: 0 })]);
    });
  });

  test("a bounce that cannot be inserted rolls back the outcomes too (nothing half-recorded)", async () => {
    await withStore(async (store) => {
      const m = message({ recipients: [{ address: "bob@relayed.example", route: "smtp://10.0.0.5" }] });
      await store.enqueue(m);
      const [bob] = store.due(T0, 10);
      // A bounce whose id is already taken makes its insert fail.
      const clash = message({ id: m.id, sender: "", recipients: [{ address: "alice@example.org", route: "smtp://10.0.0.9" }] });
      await expect(store.record([{ kind: "failed", rowId: bob!.rowId, error: "550" }], [clash], [m.id])).rejects.toThrow();
      expect(store.due(T0, 10)).toEqual([expect.objectContaining({ rowId: bob!.rowId, messageId: m.id, attempts: 0 })]);
      expect(store.depth()).toEqual({ messages: 1, recipients: 1, deferred: 0 });
    });
  });
});

describe("restart", () => {
  test("reopening keeps messages, attempts and next_attempt_at, so the schedule resumes", async () => {
    const dir = freshDir();
    const m = message();
    const retryAt = T0 + 15 * 60_000;
    {
      const store = QueueStore.open(dir);
      await store.enqueue(m);
      const [bob] = store.due(T0, 10);
      await store.record([{ kind: "deferred", rowId: bob!.rowId, error: "451", nextAttemptAt: retryAt }], [], [m.id]);
      await store.record([{ kind: "deferred", rowId: bob!.rowId, error: "451", nextAttemptAt: retryAt }], [], [m.id]);
      store.close();
    }
    const store = QueueStore.open(dir);
    try {
      expect(store.due(T0, 10).map((r) => r.address)).toEqual(["carol@relayed.example"]);
      expect(store.due(retryAt, 10).find((r) => r.address === "bob@relayed.example")).toMatchObject({ attempts: 2, nextAttemptAt: retryAt });
      expect(store.nextDueAt()).toBe(T0);
      expect(new Uint8Array(store.body(m.id).inline!)).toEqual(new Uint8Array(m.inlineBody!));
    } finally {
      store.close();
    }
  });

  test("a write submitted just before close is committed by close", async () => {
    const dir = freshDir();
    const m = message();
    const store = QueueStore.open(dir);
    const pending = store.enqueue(m);
    store.close();
    await pending;
    const again = QueueStore.open(dir);
    try {
      expect(again.due(T0, 10)).toHaveLength(2);
    } finally {
      again.close();
    }
  });

  test("orphan spool files (no queue row) are removed at open; files with a row are kept", async () => {
    const dir = freshDir();
    let kept: NewMessage;
    {
      const store = QueueStore.open(dir);
      kept = await spooledMessage(store, "kept body");
      await store.enqueue(kept);
      // A crash between writing the spool file and committing its row leaves this behind.
      await spooledMessage(store, "orphan body");
      writeFileSync(join(store.spool.dir, "stray-file"), "x");
      expect(readdirSync(store.spool.dir)).toHaveLength(3);
      store.close();
    }
    const store = QueueStore.open(dir);
    try {
      expect(readdirSync(store.spool.dir)).toEqual([kept.id]);
      expect(store.body(kept.id).spoolPath).toBe(join(store.spool.dir, kept.id));
    } finally {
      store.close();
    }
  });
});

describe("group commit through enqueue", () => {
  test("enqueues issued in the same tick all resolve and all commit", async () => {
    await withStore(async (store) => {
      const msgs = Array.from({ length: 20 }, () => message());
      const results = await Promise.allSettled(msgs.map((m) => store.enqueue(m)));
      expect(results.every((r) => r.status === "fulfilled")).toBe(true);
      expect(store.depth()).toEqual({ messages: 20, recipients: 40, deferred: 0 });
    });
  });

  test("a failing enqueue (duplicate id) rejects alone; the others in its group commit", async () => {
    await withStore(async (store) => {
      const existing = message();
      await store.enqueue(existing);
      const before = message();
      const after = message();
      const dupInBatch = message();
      const results = await Promise.allSettled([
        store.enqueue(before),
        store.enqueue(message({ id: existing.id, sender: "mallory@example.org" })),
        store.enqueue(dupInBatch),
        store.enqueue(message({ id: dupInBatch.id })),
        store.enqueue(after),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
      const ids = new Set(store.due(T0, 100).map((r) => r.messageId));
      expect(ids).toEqual(new Set([existing.id, before.id, dupInBatch.id, after.id]));
      expect(store.depth()).toEqual({ messages: 4, recipients: 8, deferred: 0 });
      // The duplicate did not touch the message already queued.
      expect(store.due(T0, 100).filter((r) => r.messageId === existing.id).every((r) => r.sender === "alice@example.org")).toBe(true);
    });
  });

  test("a message whose recipient insert fails leaves no message row behind", async () => {
    await withStore(async (store) => {
      const good = message();
      const bad = message({ recipients: [{ address: "x@relayed.example", route: "smtp://10.0.0.5" }, { address: "y@relayed.example", route: null as unknown as string }] });
      const results = await Promise.allSettled([store.enqueue(good), store.enqueue(bad)]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected"]);
      expect(store.depth()).toEqual({ messages: 1, recipients: 2, deferred: 0 });
      expect(() => store.body(bad.id)).toThrow();
    });
  });
});

describe("file permissions", () => {
  test("the state and spool directories are 0700; the database and spool files are 0600", async () => {
    await withStore(async (store, dir) => {
      await store.enqueue(message());
      const m = await spooledMessage(store, "secret body");
      await store.enqueue(m);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(store.spool.dir).mode & 0o777).toBe(0o700);
      expect(statSync(join(store.spool.dir, m.id)).mode & 0o777).toBe(0o600);
      const dbFiles = readdirSync(dir).filter((f) => f.startsWith("queue.db"));
      expect(dbFiles).toContain("queue.db");
      for (const f of dbFiles) expect([f, statSync(join(dir, f)).mode & 0o777]).toEqual([f, 0o600]);
    });
  });
});
