// A node's own policy state: policy.db for what must survive a restart (greylisting, the
// blocklist, recipient verification, MTA-STS policies) and bounded in-memory maps for the
// counters (rate buckets, connections per minute, AUTH failures, pregreet passes). Every
// answer is synchronous. It is the whole state of a single node, and a cluster node's fallback.

import { LRUCache } from "lru-cache";
import { take, type Buckets } from "./token-bucket.ts";
import type { BlockEntry, GreylistEntry, PolicyStore, VerifyEntry } from "../policy/store.ts";
import type { Bucket, GreylistLookup, PolicyState } from "./types.ts";

const CONNECTION_WINDOW_MS = 60_000;

type Window = { start: number; count: number };

/** Counts one more event of `key` in its fixed window (starting at its first event). */
export function countInWindow(counts: LRUCache<string, Window>, key: string, windowMs: number, now: number): number {
  let c = counts.get(key);
  if (!c || now - c.start >= windowMs) {
    c = { start: now, count: 0 };
    counts.set(key, c);
  }
  return ++c.count;
}

export class LocalState implements PolicyState {
  readonly kind = "local";
  private readonly greylistListeners: (() => void)[] = [];
  // lru-cache allocates its whole capacity up front (megabytes each): each map is made the
  // first time something asks for it, never for checks that are off.
  private connections: LRUCache<string, Window> | null = null;
  private authFailures: LRUCache<string, Window> | null = null;
  private pregreet: LRUCache<string, true> | null = null;

  /** `buckets`: the rate buckets, shared with the send API's key limits. */
  constructor(
    readonly store: PolicyStore,
    private readonly buckets: () => Buckets,
  ) {}

  take(list: readonly Bucket[], now: number): number {
    const b = this.buckets();
    for (let i = 0; i < list.length; i++) if (!take(b, list[i]!.key, list[i]!.limit, now)) return i;
    return -1;
  }

  countConnection(key: string, now: number): number {
    return countInWindow((this.connections ??= new LRUCache({ max: 20_000, ttl: CONNECTION_WINDOW_MS })), key, CONNECTION_WINDOW_MS, now);
  }

  greylistLookup(network: string, sender: string, recipient: string, now: number, wantEntry: boolean): GreylistLookup {
    const allowed = this.store.networkAllowed(network, now);
    return { allowed, entry: wantEntry && !allowed ? this.store.greylistEntry(network, sender, recipient) : null };
  }

  greylistNew(e: GreylistEntry, cap: Bucket | null, now: number): boolean {
    if (cap && !take(this.buckets(), cap.key, cap.limit, now)) return false;
    this.store.saveGreylist(e);
    return true;
  }

  greylistPassed(e: GreylistEntry, firstPass: { readonly after: number; readonly until: number } | null): void {
    this.store.saveGreylist(e);
    if (firstPass && this.store.passedTriplets(e.network) >= firstPass.after) this.store.allowNetwork(e.network, firstPass.until);
  }

  greylistRoom(maxBytes: number): boolean {
    return this.store.sizeBytes() <= maxBytes;
  }

  listGreylist(after: string, limit: number): GreylistEntry[] {
    return this.store.listGreylist(after, limit);
  }

  removeGreylist(network: string, sender: string | null, recipient: string | null): number {
    const n = this.store.removeGreylist(network, sender, recipient);
    for (const l of this.greylistListeners) l();
    return n;
  }

  onGreylistChange(listener: () => void): void {
    this.greylistListeners.push(listener);
  }

  blocked(ip: string, now: number): BlockEntry | null {
    return this.store.blocked(ip, now);
  }

  blocklist(now: number): BlockEntry[] {
    return this.store.blocklist(now);
  }

  block(cidr: string, reason: string, now: number, expiresAt: number | null): BlockEntry {
    return this.store.block(cidr, reason, now, expiresAt);
  }

  unblock(cidr: string): boolean {
    return this.store.unblock(cidr);
  }

  countAuthFailure(key: string, windowMs: number, now: number): number {
    return countInWindow((this.authFailures ??= new LRUCache({ max: 20_000 })), key, windowMs, now);
  }

  clearAuthFailures(key: string): void {
    this.authFailures?.delete(key);
  }

  verifyEntry(address: string): VerifyEntry | null {
    return this.store.verifyEntry(address);
  }

  saveVerify(e: VerifyEntry): void {
    this.store.saveVerify(e);
  }

  pregreetPassed(key: string): boolean {
    return this.pregreet?.has(key) ?? false;
  }

  savePregreetPass(key: string, ttlMs: number): void {
    (this.pregreet ??= new LRUCache<string, true>({ max: 20_000, ttl: ttlMs })).set(key, true, { ttl: ttlMs });
  }

  forgetPregreetPass(key: string): void {
    this.pregreet?.delete(key);
  }

  stsPolicy(domain: string): string | null {
    return this.store.stsPolicy(domain, Date.now());
  }

  saveStsPolicy(domain: string, json: string, expiresAt: number): void {
    this.store.saveStsPolicy(domain, json, expiresAt);
  }

  removeStsPolicy(domain: string): void {
    this.store.removeStsPolicy(domain);
  }

  expire(now: number): void {
    this.store.expire(now);
  }

  close(): void {
    this.store.close();
  }
}
