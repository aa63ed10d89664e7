// Connect stage: clients on the static (config) or dynamic (admin API, brute force) blocklist
// are refused before the greeting.

import type { Cidr } from "../../net/cidr.ts";
import { anyContains, cidrContains } from "../../net/cidr.ts";
import type { PolicyStore } from "../../policy/store.ts";
import { ACCEPT, reject, type Verdict } from "../../verdict.ts";
import type { ConnectContext } from "../types.ts";

export function blocklistCheck(staticList: readonly Cidr[], store: PolicyStore, now: () => number) {
  return (ctx: ConnectContext): Verdict => {
    if (ctx.trusted) return ACCEPT;
    const hit = anyContains(staticList, ctx.ip) || store.blocked(ctx.ip, now(), cidrContains) !== null;
    return hit ? reject(554, "5.7.1", `Service unavailable; client [${ctx.ip}] is blocked`, "blocklist") : ACCEPT;
  };
}
