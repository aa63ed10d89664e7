// MAIL stage: token buckets per client IP and per envelope sender domain. A bucket holds
// `messages` tokens and refills at messages/window; an empty one means 450 4.7.1. The buckets
// live in the policy state: the node's memory, or Redis shared by every node of a cluster.

import type { RateLimit } from "../../config/types.ts";
import { clientKey } from "../../net/cidr.ts";
import { whenReady, type Bucket, type Maybe, type RateState } from "../../state/types.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { MailContext } from "../types.ts";

export { buckets, take, type Buckets } from "../../state/token-bucket.ts";

export function rateLimitCheck(limits: { perIp: RateLimit | null; perSenderDomain: RateLimit | null }, state: RateState, now: () => number, ipv6PrefixLength = 64) {
  return (ctx: MailContext): Maybe<Verdict> => {
    // Authenticated users have their own limit (submission.rate_limit).
    if (ctx.client.trusted || ctx.client.allowlisted || ctx.client.user !== null) return ACCEPT;
    const domain = ctx.sender?.domain;
    const ip: Bucket | null = limits.perIp ? { key: `ip ${clientKey(ctx.client.ip, ipv6PrefixLength)}`, limit: limits.perIp } : null;
    const dom: Bucket | null = limits.perSenderDomain && domain ? { key: `domain ${domain}`, limit: limits.perSenderDomain } : null;
    const list = ip && dom ? [ip, dom] : ip ? [ip] : dom ? [dom] : null;
    if (!list) return ACCEPT;
    // One call for both buckets: one round trip to Redis. The first empty bucket decides.
    return whenReady(state.take(list, now()), (empty) => {
      if (empty === -1) return ACCEPT;
      if (list[empty] === ip) return defer(450, "4.7.1", `Rate limit exceeded for [${ctx.client.ip}], try again later`, "rate limit ip");
      return defer(450, "4.7.1", `Rate limit exceeded for sender domain ${domain}, try again later`, "rate limit sender domain");
    });
  };
}
