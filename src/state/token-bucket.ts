// Token buckets in memory: a bucket holds `messages` tokens and refills at messages/window.
// The node's own rate state (local.ts); redis.ts keeps the same buckets in Redis.

import { LRUCache } from "lru-cache";
import type { RateLimit } from "../config/types.ts";

export type Buckets = LRUCache<string, { tokens: number; at: number }>;

export function buckets(): Buckets {
  return new LRUCache({ max: 50_000 });
}

/** Takes one token from the bucket `key`; false when it is empty. */
export function take(b: Buckets, key: string, limit: RateLimit, now: number): boolean {
  const rate = limit.messages / limit.windowMs;
  const cur = b.get(key) ?? { tokens: limit.messages, at: now };
  const tokens = Math.min(limit.messages, cur.tokens + (now - cur.at) * rate);
  if (tokens < 1) {
    b.set(key, { tokens, at: now });
    return false;
  }
  b.set(key, { tokens: tokens - 1, at: now });
  return true;
}
