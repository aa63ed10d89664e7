// Submission users, in the queue database (one backup holds them with the mail): names,
// argon2id password hashes (Bun.password), and the identities each may send as: whole
// addresses ("alice@example.org") or domains ("@example.org").

import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { openDatabase } from "../sqlite.ts";

export interface User {
  readonly name: string;
  readonly identities: readonly string[];
  readonly createdAt: number;
}

export class UserError extends Error {}

const SCHEMA = `CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  identities TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;`;

const NAME = /^[a-z0-9][a-z0-9._@+-]{0,127}$/i;
const IDENTITY = /^(?:[^\s@<>]+@|@)[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$/i;

export function validIdentity(id: string): boolean {
  return IDENTITY.test(id);
}

/** True when `address` is one of the identities: the exact address, or any address at a listed @domain. */
export function mayUse(identities: readonly string[], address: string): boolean {
  const a = address.toLowerCase();
  const domain = a.slice(a.lastIndexOf("@"));
  return identities.some((id) => id === a || (id.startsWith("@") && id === domain));
}

export class UserStore {
  private readonly q;
  // A hash to verify against when the user does not exist, so a wrong name costs the same
  // time as a wrong password and timing tells nothing about who has an account.
  private readonly decoy = Bun.password.hashSync("not a real password", { algorithm: "argon2id" });

  private constructor(private readonly db: Database) {
    db.run(SCHEMA);
    this.q = {
      get: db.query<{ name: string; password_hash: string; identities: string; created_at: number }, [string]>("SELECT * FROM users WHERE name = ?"),
      all: db.query<{ name: string; identities: string; created_at: number }, []>("SELECT name, identities, created_at FROM users ORDER BY name"),
      insert: db.query<unknown, [string, string, string, number]>("INSERT INTO users (name, password_hash, identities, created_at) VALUES (?, ?, ?, ?)"),
      password: db.query<unknown, [string, string]>("UPDATE users SET password_hash = ? WHERE name = ?"),
      identities: db.query<unknown, [string, string]>("UPDATE users SET identities = ? WHERE name = ?"),
      remove: db.query<unknown, [string]>("DELETE FROM users WHERE name = ?"),
    };
  }

  static open(stateDir: string): UserStore {
    return new UserStore(openDatabase(join(stateDir, "queue.db"), "FULL"));
  }

  async add(name: string, password: string, identities: readonly string[], now = Date.now()): Promise<User> {
    if (!NAME.test(name)) throw new UserError(`"${name}" is not a valid user name: letters, digits and . _ @ + - (at most 128)`);
    checkPassword(password);
    const ids = normalizeIdentities(identities);
    if (this.q.get.get(name.toLowerCase())) throw new UserError(`user ${name} already exists`);
    const hash = await Bun.password.hash(password, { algorithm: "argon2id" });
    this.q.insert.run(name.toLowerCase(), hash, JSON.stringify(ids), now);
    return { name: name.toLowerCase(), identities: ids, createdAt: now };
  }

  async setPassword(name: string, password: string): Promise<void> {
    checkPassword(password);
    const hash = await Bun.password.hash(password, { algorithm: "argon2id" });
    if (this.q.password.run(hash, name.toLowerCase()).changes === 0) throw new UserError(`no user ${name}`);
  }

  setIdentities(name: string, identities: readonly string[]): User {
    const ids = normalizeIdentities(identities);
    if (this.q.identities.run(JSON.stringify(ids), name.toLowerCase()).changes === 0) throw new UserError(`no user ${name}`);
    return this.get(name)!;
  }

  remove(name: string): boolean {
    return this.q.remove.run(name.toLowerCase()).changes > 0;
  }

  get(name: string): User | null {
    const row = this.q.get.get(name.toLowerCase());
    return row ? { name: row.name, identities: JSON.parse(row.identities) as string[], createdAt: row.created_at } : null;
  }

  list(): User[] {
    return this.q.all.all().map((r) => ({ name: r.name, identities: JSON.parse(r.identities) as string[], createdAt: r.created_at }));
  }

  /** The user, if the password is right; null for a wrong name or password alike. */
  async verify(name: string, password: string): Promise<User | null> {
    const row = NAME.test(name) ? this.q.get.get(name.toLowerCase()) : null;
    const ok = await Bun.password.verify(password, row?.password_hash ?? this.decoy);
    return row && ok ? { name: row.name, identities: JSON.parse(row.identities) as string[], createdAt: row.created_at } : null;
  }

  close(): void {
    this.db.close();
  }
}

function checkPassword(password: string): void {
  if (password.length < 12) throw new UserError("the password must be at least 12 characters");
  if (/[\r\n\0]/.test(password)) throw new UserError("the password must not contain line breaks or NUL");
}

function normalizeIdentities(identities: readonly string[]): string[] {
  const ids = [...new Set(identities.map((i) => i.trim().toLowerCase()))];
  const bad = ids.find((i) => !validIdentity(i));
  if (bad !== undefined) throw new UserError(`"${bad}" is not an identity: use an address (alice@example.org) or a domain (@example.org)`);
  if (ids.length === 0) throw new UserError("give the user at least one identity (--identity alice@example.org or --identity @example.org)");
  return ids;
}
