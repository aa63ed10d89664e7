// Submission: messages per authenticated user per window (a token bucket per user name, in the
// policy state: shared by every node of a cluster).

import type { RateLimit } from "../../config/types.ts";
import { whenReady, type Maybe, type RateState } from "../../state/types.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { MailContext } from "../types.ts";

export function userRateLimit(limit: RateLimit, state: RateState, now: () => number) {
  return (ctx: MailContext): Maybe<Verdict> => {
    const user = ctx.client.user;
    if (user === null) return ACCEPT;
    return whenReady(state.take([{ key: `user ${user}`, limit }], now()), (empty) =>
      empty === -1 ? ACCEPT : defer(450, "4.7.1", `Rate limit exceeded for user ${user}, try again later`, "rate limit user"),
    );
  };
}
