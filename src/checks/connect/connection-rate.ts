// Connect stage: at most `perMinute` new connections from one client IP per minute
// (fixed one-minute windows; the counters live in a bounded LRU, not in the database).

import { LRUCache } from "lru-cache";
import { clientKey } from "../../net/cidr.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { ConnectContext } from "../types.ts";

const WINDOW_MS = 60_000;

export type ConnectionCounts = LRUCache<string, { start: number; count: number }>;

export function connectionCounts(): ConnectionCounts {
  return new LRUCache({ max: 20_000, ttl: WINDOW_MS });
}

/** `counts` is asked for on the first untrusted connection, so a relay for trusted clients never allocates it. */
export function connectionRateCheck(perMinute: number, countsOf: ConnectionCounts | (() => ConnectionCounts), now: () => number, ipv6PrefixLength = 64) {
  return (ctx: ConnectContext): Verdict => {
    if (ctx.trusted) return ACCEPT;
    const counts = typeof countsOf === "function" ? countsOf() : countsOf;
    const t = now();
    // An IPv6 client is its /64: fresh addresses from one subscriber share one count.
    const key = clientKey(ctx.ip, ipv6PrefixLength);
    let c = counts.get(key);
    if (!c || t - c.start >= WINDOW_MS) {
      c = { start: t, count: 0 };
      counts.set(key, c);
    }
    c.count++;
    return c.count > perMinute ? defer(421, "4.7.0", `Too many connections from [${ctx.ip}], slow down and try again later`, "connection rate") : ACCEPT;
  };
}
