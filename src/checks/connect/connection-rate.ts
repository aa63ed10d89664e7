// Connect stage: at most `perMinute` new connections from one client IP per minute (fixed
// one-minute windows, counted in the policy state: the node's memory, or Redis for a cluster).

import { clientKey } from "../../net/cidr.ts";
import { whenReady, type Maybe, type RateState } from "../../state/types.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { ConnectContext } from "../types.ts";

export function connectionRateCheck(perMinute: number, state: RateState, now: () => number, ipv6PrefixLength = 64) {
  return (ctx: ConnectContext): Maybe<Verdict> => {
    if (ctx.trusted) return ACCEPT;
    // An IPv6 client is its /64: fresh addresses from one subscriber share one count.
    return whenReady(state.countConnection(clientKey(ctx.ip, ipv6PrefixLength), now()), (count) =>
      count > perMinute ? defer(421, "4.7.0", `Too many connections from [${ctx.ip}], slow down and try again later`, "connection rate") : ACCEPT,
    );
  };
}
