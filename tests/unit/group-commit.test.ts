import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { GroupCommit } from "../../src/queue/group-commit.ts";

/** An in-memory database whose top-level transactions (commits) are counted. */
function countingDb(): { db: Database; commits: () => number } {
  const db = new Database(":memory:");
  db.run("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  let commits = 0;
  const original = db.transaction.bind(db);
  db.transaction = ((fn: (...args: never[]) => unknown) => {
    const tx = original(fn);
    return (...args: never[]) => {
      if (!db.inTransaction) commits++;
      return tx(...args);
    };
  }) as typeof db.transaction;
  return { db, commits: () => commits };
}

const rows = (db: Database) => db.query<{ id: number; v: string }, []>("SELECT id, v FROM t ORDER BY id").all();

describe("GroupCommit", () => {
  test("writes submitted in the same tick share one transaction", async () => {
    const { db, commits } = countingDb();
    const gc = new GroupCommit(db);
    const insert = db.query("INSERT INTO t (id, v) VALUES (?, ?)");
    await Promise.all(Array.from({ length: 50 }, (_, i) => gc.submit(() => void insert.run(i + 1, `v${i}`))));
    expect(commits()).toBe(1);
    expect(rows(db)).toHaveLength(50);
  });

  test("nothing is written before the group is flushed", async () => {
    const { db } = countingDb();
    const gc = new GroupCommit(db);
    const p = gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (1, 'a')"));
    await Promise.resolve();
    expect(rows(db)).toHaveLength(0);
    await p;
    expect(rows(db)).toHaveLength(1);
  });

  test("writes in later ticks form later groups", async () => {
    const { db, commits } = countingDb();
    const gc = new GroupCommit(db);
    await gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (1, 'a')"));
    await gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (2, 'b')"));
    expect(commits()).toBe(2);
  });

  test("a failing write is rejected alone and its partial writes are rolled back", async () => {
    const { db, commits } = countingDb();
    const gc = new GroupCommit(db);
    const results = await Promise.allSettled([
      gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (1, 'a')")),
      gc.submit(() => {
        db.run("INSERT INTO t (id, v) VALUES (2, 'partial')");
        db.run("INSERT INTO t (id, v) VALUES (1, 'duplicate')");
      }),
      gc.submit(() => {
        throw new Error("application error");
      }),
      gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (3, 'c')")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "rejected", "fulfilled"]);
    expect((results[2] as PromiseRejectedResult).reason).toEqual(new Error("application error"));
    expect(rows(db)).toEqual([
      { id: 1, v: "a" },
      { id: 3, v: "c" },
    ]);
    expect(commits()).toBe(1);
  });

  test("a write that ends the whole transaction fails the group: nothing after it runs or commits", async () => {
    const { db } = countingDb();
    const gc = new GroupCommit(db);
    let laterRan = false;
    const results = await Promise.allSettled([
      gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (1, 'before')")),
      // As SQLITE_FULL or SQLITE_IOERR do: the transaction is rolled back, not just the savepoint.
      gc.submit(() => {
        db.run("INSERT INTO t (id, v) VALUES (2, 'failing')");
        db.run("ROLLBACK");
      }),
      gc.submit(() => {
        laterRan = true;
        db.run("INSERT INTO t (id, v) VALUES (3, 'after')");
      }),
    ]);
    // Every client is told the truth: none of the three is stored (451, and a retry stores it once).
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(laterRan).toBe(false);
    expect(rows(db)).toEqual([]);
    expect(db.inTransaction).toBe(false);
    // The next group works normally.
    await gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (4, 'next')"));
    expect(rows(db)).toEqual([{ id: 4, v: "next" }]);
  });

  test("flush() commits pending writes at once (shutdown)", async () => {
    const { db } = countingDb();
    const gc = new GroupCommit(db);
    const p = gc.submit(() => void db.run("INSERT INTO t (id, v) VALUES (1, 'a')"));
    gc.flush();
    expect(rows(db)).toHaveLength(1);
    await p;
    gc.flush();
    expect(rows(db)).toHaveLength(1);
  });
});
