// Submission: messages per authenticated user per window (a token bucket per user name).

import type { RateLimit } from "../../config/types.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import { take, type Buckets } from "../envelope/rate-limit.ts";
import type { MailContext } from "../types.ts";

export function userRateLimit(limit: RateLimit, buckets: Buckets, now: () => number) {
  return (ctx: MailContext): Verdict => {
    const user = ctx.client.user;
    if (user === null || take(buckets, `user ${user}`, limit, now())) return ACCEPT;
    return defer(450, "4.7.1", `Rate limit exceeded for user ${user}, try again later`, "rate limit user");
  };
}
