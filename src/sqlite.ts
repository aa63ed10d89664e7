// Opening one of our SQLite databases: created 0600 (SQLite gives the -wal and -shm files the
// mode of the database file, so creating that one first covers all three), WAL journal, and
// the durability the caller asks for.

import { Database } from "bun:sqlite";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";

export function openDatabase(path: string, synchronous: "FULL" | "NORMAL"): Database {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, "a", 0o600));
  const db = new Database(path, { create: true, strict: true });
  db.run("PRAGMA journal_mode = WAL");
  db.run(`PRAGMA synchronous = ${synchronous}`);
  db.run("PRAGMA busy_timeout = 5000");
  return db;
}
