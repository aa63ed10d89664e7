// API keys for the HTTP send API, in the queue database. A key is shown once, when created:
// "mrk_<id>_<secret>". Only the SHA-256 of the secret is stored (the secret is 32 random bytes,
// so a fast hash is enough; argon2 is for passwords people choose).

import type { Database } from "bun:sqlite";
import { timingSafeEqual } from "node:crypto";
import { join } from "node:path";
import type { RateLimit } from "../config/types.ts";
import { openDatabase } from "../sqlite.ts";
import { parseRate as rateOf } from "../units.ts";

export function parseRate(text: string): RateLimit | null {
  return rateOf(text) ?? null;
}

export interface ApiKey {
  readonly id: string;
  readonly name: string;
  /** Sender domains this key may use in From: and the envelope. */
  readonly domains: readonly string[];
  readonly rateLimit: RateLimit | null;
  readonly createdAt: number;
}

export class ApiKeyError extends Error {}

const SCHEMA = `CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_sha256 BLOB NOT NULL,
  domains TEXT NOT NULL, rate_limit TEXT, created_at INTEGER NOT NULL
) STRICT;`;

type Row = { id: string; name: string; secret_sha256: Uint8Array; domains: string; rate_limit: string | null; created_at: number };
const sha256 = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest();
const b32 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");


export class ApiKeyStore {
  private readonly q;

  private constructor(private readonly db: Database) {
    db.run(SCHEMA);
    this.q = {
      get: db.query<Row, [string]>("SELECT * FROM api_keys WHERE id = ?"),
      all: db.query<Row, []>("SELECT * FROM api_keys ORDER BY created_at"),
      insert: db.query<unknown, [string, string, Uint8Array, string, string | null, number]>("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)"),
      remove: db.query<unknown, [string]>("DELETE FROM api_keys WHERE id = ?"),
    };
  }

  static open(stateDir: string): ApiKeyStore {
    return new ApiKeyStore(openDatabase(join(stateDir, "queue.db"), "FULL"));
  }

  /** Creates a key; the returned token is the only time the secret exists outside its user. */
  create(name: string, domains: readonly string[], rate: string | null, now = Date.now()): { key: ApiKey; token: string } {
    if (!/^[\w .@-]{1,64}$/.test(name)) throw new ApiKeyError("the key name must be 1 to 64 letters, digits, spaces or . _ @ -");
    const ds = [...new Set(domains.map((d) => d.trim().toLowerCase().replace(/^@/, "")))];
    if (ds.length === 0) throw new ApiKeyError("give the key at least one sender domain (--domain example.org)");
    const bad = ds.find((d) => !/^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$/.test(d));
    if (bad !== undefined) throw new ApiKeyError(`"${bad}" is not a domain name`);
    const rateLimit = rate === null ? null : parseRate(rate);
    if (rate !== null && !rateLimit) throw new ApiKeyError(`"${rate}" is not a rate such as 100/1h`);
    const id = b32(crypto.getRandomValues(new Uint8Array(6)));
    const secret = b32(crypto.getRandomValues(new Uint8Array(32)));
    this.q.insert.run(id, name, sha256(secret), JSON.stringify(ds), rate, now);
    return { key: { id, name, domains: ds, rateLimit, createdAt: now }, token: `mrk_${id}_${secret}` };
  }

  /** The key a bearer token belongs to, or null; the secret is compared in constant time. */
  verify(token: string): ApiKey | null {
    const m = /^mrk_([A-Za-z0-9_-]{8})_([A-Za-z0-9_-]{43})$/.exec(token);
    const row = m ? this.q.get.get(m[1]!) : null;
    const expected = row ? row.secret_sha256 : sha256("no such key");
    const ok = timingSafeEqual(sha256(m?.[2] ?? ""), Buffer.from(expected));
    return row && ok ? toKey(row) : null;
  }

  list(): ApiKey[] {
    return this.q.all.all().map(toKey);
  }

  remove(id: string): boolean {
    return this.q.remove.run(id).changes > 0;
  }

  close(): void {
    this.db.close();
  }
}

function toKey(r: Row): ApiKey {
  return { id: r.id, name: r.name, domains: JSON.parse(r.domains) as string[], rateLimit: r.rate_limit ? parseRate(r.rate_limit) : null, createdAt: r.created_at };
}
