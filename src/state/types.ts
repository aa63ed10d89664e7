// The defenses' state behind one interface, with two implementations: the node's own
// (local.ts: policy.db and memory) and the cluster's (redis.ts: Redis or Valkey, shared by
// every node, with the node's own state as its fallback).
//
// Reads a reply depends on return Maybe<T>: the local store answers synchronously, so a
// single node pays no promise and no extra turn of the event loop per message; Redis answers
// with a promise bounded by cluster.timeout. Writes no reply depends on return nothing and
// happen in the background.

import type { RateLimit } from "../config/types.ts";
import type { BlockEntry, GreylistEntry, VerifyEntry } from "../policy/store.ts";

export type Maybe<T> = T | Promise<T>;

/** Runs `then` on a value that may still be on its way, without a promise when it is not. */
export function whenReady<T, R>(value: Maybe<T>, then: (v: T) => R): Maybe<R> {
  return value instanceof Promise ? value.then(then) : then(value);
}

/** One token bucket: `key` names it (e.g. "ip 192.0.2.7"), `limit` sizes it. */
export interface Bucket {
  readonly key: string;
  readonly limit: RateLimit;
}

export interface RateState {
  /**
   * Takes a token from each bucket in order and stops at the first empty one: its index, or
   * -1 when every bucket had a token. Atomic per bucket, also between nodes.
   */
  take(buckets: readonly Bucket[], now: number): Maybe<number>;
  /** Counts a new connection of `key` in its one-minute window; the count including this one. */
  countConnection(key: string, now: number): Maybe<number>;
}

export interface GreylistLookup {
  /** The client network is allowlisted (it passed greylisting often). */
  readonly allowed: boolean;
  /** The triplet; null when unknown (or not asked for). */
  readonly entry: GreylistEntry | null;
}

export interface GreylistState {
  /** `wantEntry` false: the caller has the triplet already and asks about the network only. */
  greylistLookup(network: string, sender: string, recipient: string, now: number, wantEntry: boolean): Maybe<GreylistLookup>;
  /**
   * Records a new triplet within its network's budget (`cap`, a bucket; null: no budget):
   * true when written, false when the budget was spent and nothing was written.
   */
  greylistNew(e: GreylistEntry, cap: Bucket | null, now: number): Maybe<boolean>;
  /**
   * Saves a triplet that passed. `firstPass` given: it passed for the first time, and the
   * network is allowlisted until `until` once `after` of its triplets have passed.
   */
  greylistPassed(e: GreylistEntry, firstPass: { readonly after: number; readonly until: number } | null): void;
  /** Whether there is room for more triplets (policy.db's ceiling; Redis has maxmemory). */
  greylistRoom(maxBytes: number): boolean;
  listGreylist(after: string, limit: number): Maybe<GreylistEntry[]>;
  /** Removes one triplet, or every triplet of a network when sender and recipient are null. */
  removeGreylist(network: string, sender: string | null, recipient: string | null): Maybe<number>;
}

export interface BlockState {
  /** The active entry covering `ip`, if any: read from memory on every connection. */
  blocked(ip: string, now: number): BlockEntry | null;
  blocklist(now: number): BlockEntry[];
  block(cidr: string, reason: string, now: number, expiresAt: number | null): Maybe<BlockEntry>;
  unblock(cidr: string): Maybe<boolean>;
}

export interface AuthFailureState {
  /** Counts a failed AUTH of `key` within `windowMs` of its first failure; the count including this one. */
  countAuthFailure(key: string, windowMs: number, now: number): Maybe<number>;
  clearAuthFailures(key: string): void;
}

/** Results that save work: recipient probes, the pregreet test, MTA-STS policies. */
export interface CacheState {
  verifyEntry(address: string): Maybe<VerifyEntry | null>;
  saveVerify(e: VerifyEntry): void;
  /** The client (its key) waited for a delayed greeting within the last `ttlMs`. */
  pregreetPassed(key: string): Maybe<boolean>;
  savePregreetPass(key: string, ttlMs: number): void;
  forgetPregreetPass(key: string): void;
  /** A destination's MTA-STS policy as its JSON text, or null. */
  stsPolicy(domain: string): Maybe<string | null>;
  saveStsPolicy(domain: string, json: string, expiresAt: number): void;
  removeStsPolicy(domain: string): void;
}

export interface PolicyState extends RateState, GreylistState, BlockState, AuthFailureState, CacheState {
  /** "redis" when the state is shared between nodes. */
  readonly kind: "local" | "redis";
  /** Called when triplets were removed (here or, with Redis, on another node): cached copies must go. */
  onGreylistChange(listener: () => void): void;
  /** The periodic clean-up of expired entries. */
  expire(now: number): void;
  close(): void;
}
