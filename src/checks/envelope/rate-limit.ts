// MAIL stage: token buckets per client IP and per envelope sender domain. A bucket holds
// `messages` tokens and refills at messages/window; an empty one means 450 4.7.1.

import { LRUCache } from "lru-cache";
import type { RateLimit } from "../../config/types.ts";
import { clientKey } from "../../net/cidr.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { MailContext } from "../types.ts";

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

export function rateLimitCheck(limits: { perIp: RateLimit | null; perSenderDomain: RateLimit | null }, b: Buckets, now: () => number, ipv6PrefixLength = 64) {
  return (ctx: MailContext): Verdict => {
    // Authenticated users have their own limit (submission.rate_limit).
    if (ctx.client.trusted || ctx.client.allowlisted || ctx.client.user !== null) return ACCEPT;
    const t = now();
    if (limits.perIp && !take(b, `ip ${clientKey(ctx.client.ip, ipv6PrefixLength)}`, limits.perIp, t)) {
      return defer(450, "4.7.1", `Rate limit exceeded for [${ctx.client.ip}], try again later`, "rate limit ip");
    }
    const domain = ctx.sender?.domain;
    if (limits.perSenderDomain && domain && !take(b, `domain ${domain}`, limits.perSenderDomain, t)) {
      return defer(450, "4.7.1", `Rate limit exceeded for sender domain ${domain}, try again later`, "rate limit sender domain");
    }
    return ACCEPT;
  };
}
