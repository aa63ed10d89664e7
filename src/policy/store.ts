// Defense state that must survive a restart: greylist triplets, networks allowlisted for
// passing greylisting often, the dynamic IP blocklist, recipient verification results and
// MTA-STS policies. A single node's store (src/state/local.ts); a cluster keeps the same in
// Redis and uses this one as its fallback (src/state/redis.ts). Its own database (policy.db) with
// synchronous=NORMAL: losing the last second of greylist entries to a power cut is harmless,
// and these writes must not queue behind the message queue's fsyncs.

import type { Database } from "bun:sqlite";
import { openDatabase } from "../sqlite.ts";
import { join } from "node:path";
import { firstContaining, parseCidr, type Cidr } from "../net/cidr.ts";

export interface GreylistEntry {
  readonly network: string;
  readonly sender: string;
  readonly recipient: string;
  readonly firstSeen: number;
  readonly passAfter: number;
  readonly expiresAt: number;
  readonly passes: number;
}

/** What a next hop said about a recipient (checks/envelope/recipient-verifier.ts). */
export interface VerifyEntry {
  /** Lower case. */
  readonly address: string;
  readonly status: "ok" | "unknown";
  /** The next hop's reply, for the log. */
  readonly reply: string;
  readonly checkedAt: number;
  /** After this the result still answers, and a probe refreshes it in the background. */
  readonly refreshAt: number;
  readonly expiresAt: number;
}

export interface BlockEntry {
  readonly cidr: string;
  readonly reason: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS greylist (
  network TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
  first_seen INTEGER NOT NULL, pass_after INTEGER NOT NULL, expires_at INTEGER NOT NULL, passes INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (network, sender, recipient)
) STRICT;
CREATE INDEX IF NOT EXISTS greylist_expiry ON greylist(expires_at);
CREATE TABLE IF NOT EXISTS greylist_allow (network TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS blocklist (cidr TEXT PRIMARY KEY, reason TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER) STRICT;
CREATE TABLE IF NOT EXISTS recipient_verify (
  address TEXT PRIMARY KEY, status TEXT NOT NULL, reply TEXT NOT NULL,
  checked_at INTEGER NOT NULL, refresh_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS recipient_verify_expiry ON recipient_verify(expires_at);
CREATE TABLE IF NOT EXISTS mta_sts (domain TEXT PRIMARY KEY, policy TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT;
`;

type Row = { network: string; sender: string; recipient: string; first_seen: number; pass_after: number; expires_at: number; passes: number };
const entry = (r: Row): GreylistEntry => ({
  network: r.network,
  sender: r.sender,
  recipient: r.recipient,
  firstSeen: r.first_seen,
  passAfter: r.pass_after,
  expiresAt: r.expires_at,
  passes: r.passes,
});

export class PolicyStore {
  private readonly q;
  /** The blocklist is small and read on every connection: kept parsed in memory. */
  private blocks: { cidr: Cidr; entry: BlockEntry }[] = [];

  private constructor(private readonly db: Database) {
    this.q = {
      get: db.query<Row, [string, string, string]>("SELECT * FROM greylist WHERE network = ? AND sender = ? AND recipient = ?"),
      put: db.query<unknown, [string, string, string, number, number, number, number]>(
        `INSERT INTO greylist (network, sender, recipient, first_seen, pass_after, expires_at, passes) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (network, sender, recipient) DO UPDATE SET first_seen = excluded.first_seen, pass_after = excluded.pass_after,
           expires_at = excluded.expires_at, passes = excluded.passes`,
      ),
      passedInNetwork: db.query<{ n: number }, [string]>("SELECT COUNT(*) AS n FROM greylist WHERE network = ? AND passes > 0"),
      allowNetwork: db.query<unknown, [string, number]>("INSERT INTO greylist_allow (network, expires_at) VALUES (?, ?) ON CONFLICT (network) DO UPDATE SET expires_at = excluded.expires_at"),
      isAllowed: db.query<{ one: number }, [string, number]>("SELECT 1 AS one FROM greylist_allow WHERE network = ? AND expires_at > ?"),
      list: db.query<Row, [string, number]>("SELECT * FROM greylist WHERE network || ' ' || sender || ' ' || recipient > ? ORDER BY network, sender, recipient LIMIT ?"),
      remove: db.query<unknown, [string, string, string]>("DELETE FROM greylist WHERE network = ? AND sender = ? AND recipient = ?"),
      removeNetwork: db.query<unknown, [string]>("DELETE FROM greylist WHERE network = ?"),
      expireGreylist: db.query<unknown, [number]>("DELETE FROM greylist WHERE expires_at <= ?"),
      expireAllow: db.query<unknown, [number]>("DELETE FROM greylist_allow WHERE expires_at <= ?"),
      blocks: db.query<{ cidr: string; reason: string; created_at: number; expires_at: number | null }, []>("SELECT * FROM blocklist ORDER BY created_at"),
      block: db.query<unknown, [string, string, number, number | null]>(
        "INSERT INTO blocklist (cidr, reason, created_at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (cidr) DO UPDATE SET reason = excluded.reason, expires_at = excluded.expires_at",
      ),
      unblock: db.query<unknown, [string]>("DELETE FROM blocklist WHERE cidr = ?"),
      expireBlocks: db.query<unknown, [number]>("DELETE FROM blocklist WHERE expires_at IS NOT NULL AND expires_at <= ?"),
      verifyGet: db.query<{ address: string; status: string; reply: string; checked_at: number; refresh_at: number; expires_at: number }, [string]>("SELECT * FROM recipient_verify WHERE address = ?"),
      verifyPut: db.query<unknown, [string, string, string, number, number, number]>(
        `INSERT INTO recipient_verify (address, status, reply, checked_at, refresh_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (address) DO UPDATE SET status = excluded.status, reply = excluded.reply, checked_at = excluded.checked_at,
           refresh_at = excluded.refresh_at, expires_at = excluded.expires_at`,
      ),
      expireVerify: db.query<unknown, [number]>("DELETE FROM recipient_verify WHERE expires_at <= ?"),
      stsGet: db.query<{ policy: string }, [string, number]>("SELECT policy FROM mta_sts WHERE domain = ? AND expires_at > ?"),
      stsPut: db.query<unknown, [string, string, number]>("INSERT INTO mta_sts (domain, policy, expires_at) VALUES (?, ?, ?) ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, expires_at = excluded.expires_at"),
      stsRemove: db.query<unknown, [string]>("DELETE FROM mta_sts WHERE domain = ?"),
      expireSts: db.query<unknown, [number]>("DELETE FROM mta_sts WHERE expires_at <= ?"),
      size: db.query<{ bytes: number }, []>("SELECT (page_count - freelist_count) * page_size AS bytes FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"),
    };
    this.loadBlocks();
  }

  static open(stateDir: string): PolicyStore {
    const db = openDatabase(join(stateDir, "policy.db"), "NORMAL");
    db.run(SCHEMA);
    return new PolicyStore(db);
  }

  greylistEntry(network: string, sender: string, recipient: string): GreylistEntry | null {
    const row = this.q.get.get(network, sender, recipient);
    return row ? entry(row) : null;
  }

  saveGreylist(e: GreylistEntry): void {
    this.q.put.run(e.network, e.sender, e.recipient, e.firstSeen, e.passAfter, e.expiresAt, e.passes);
  }

  verifyEntry(address: string): VerifyEntry | null {
    const r = this.q.verifyGet.get(address);
    if (!r || (r.status !== "ok" && r.status !== "unknown")) return null;
    return { address: r.address, status: r.status, reply: r.reply, checkedAt: r.checked_at, refreshAt: r.refresh_at, expiresAt: r.expires_at };
  }

  saveVerify(e: VerifyEntry): void {
    this.q.verifyPut.run(e.address, e.status, e.reply, e.checkedAt, e.refreshAt, e.expiresAt);
  }

  /** A destination's MTA-STS policy (JSON) until it expires, so a restart does not forget it (RFC 8461 3.3). */
  stsPolicy(domain: string, now: number): string | null {
    return this.q.stsGet.get(domain, now)?.policy ?? null;
  }

  saveStsPolicy(domain: string, json: string, expiresAt: number): void {
    this.q.stsPut.run(domain, json, expiresAt);
  }

  removeStsPolicy(domain: string): void {
    this.q.stsRemove.run(domain);
  }

  /** Bytes of policy.db in use (pages holding data; free pages left by expired rows do not count). */
  sizeBytes(): number {
    return this.q.size.get()!.bytes;
  }

  /** Triplets of a client network that passed greylisting at least once. */
  passedTriplets(network: string): number {
    return this.q.passedInNetwork.get(network)!.n;
  }

  allowNetwork(network: string, until: number): void {
    this.q.allowNetwork.run(network, until);
  }

  networkAllowed(network: string, now: number): boolean {
    return this.q.isAllowed.get(network, now) !== null;
  }

  listGreylist(after: string, limit: number): GreylistEntry[] {
    return this.q.list.all(after, limit).map(entry);
  }

  /** Removes one triplet, or every triplet of a network when sender and recipient are null. */
  removeGreylist(network: string, sender: string | null, recipient: string | null): number {
    return (sender === null || recipient === null ? this.q.removeNetwork.run(network) : this.q.remove.run(network, sender, recipient)).changes;
  }

  blocklist(now: number): BlockEntry[] {
    return activeBlocks(this.blocks, now);
  }

  /** The active blocklist entry covering `ip`, if any. */
  blocked(ip: string, now: number): BlockEntry | null {
    return blockCovering(this.blocks, ip, now);
  }

  block(cidr: string, reason: string, now: number, expiresAt: number | null): BlockEntry {
    if (!parseCidr(cidr)) throw new Error(`not a network: ${cidr}`);
    this.q.block.run(cidr, reason, now, expiresAt);
    this.loadBlocks();
    return this.blocks.find((b) => b.entry.cidr === cidr)!.entry;
  }

  unblock(cidr: string): boolean {
    const removed = this.q.unblock.run(cidr).changes > 0;
    this.loadBlocks();
    return removed;
  }

  /** The periodic clean-up: expired triplets, allowlisted networks and blocks. */
  expire(now: number): void {
    this.db.transaction(() => {
      this.q.expireGreylist.run(now);
      this.q.expireAllow.run(now);
      this.q.expireBlocks.run(now);
      this.q.expireVerify.run(now);
      this.q.expireSts.run(now);
    })();
    this.loadBlocks();
  }

  close(): void {
    this.db.close();
  }

  private loadBlocks(): void {
    this.blocks = this.q.blocks.all().flatMap((r) => {
      const cidr = parseCidr(r.cidr);
      return cidr ? [{ cidr, entry: { cidr: r.cidr, reason: r.reason, createdAt: r.created_at, expiresAt: r.expires_at } }] : [];
    });
  }
}

/** A blocklist with its networks parsed, as this store and the cluster's copy keep it. */
export type ParsedBlocks = readonly { readonly cidr: Cidr; readonly entry: BlockEntry }[];

const unexpired = (entry: BlockEntry, now: number): boolean => entry.expiresAt === null || entry.expiresAt > now;

/** The entries not expired at `now`. */
export function activeBlocks(blocks: ParsedBlocks, now: number): BlockEntry[] {
  return blocks.filter((b) => unexpired(b.entry, now)).map((b) => b.entry);
}

/** The unexpired entry covering `ip`, if any (runs for every connection). */
export function blockCovering(blocks: ParsedBlocks, ip: string, now: number): BlockEntry | null {
  return firstContaining(blocks, ip, (b) => unexpired(b.entry, now))?.entry ?? null;
}
