// Connect stage: clients on the static (config) or dynamic (admin API, brute force) blocklist
// are refused before the greeting. The dynamic list is read from memory (state/*.ts keep it).

import type { Cidr } from "../../net/cidr.ts";
import { anyContains } from "../../net/cidr.ts";
import type { BlockState } from "../../state/types.ts";
import { ACCEPT, reject, type Verdict } from "../../verdict.ts";
import type { ConnectContext } from "../types.ts";

export function blocklistCheck(staticList: readonly Cidr[], state: BlockState, now: () => number) {
  return (ctx: ConnectContext): Verdict => {
    if (ctx.trusted) return ACCEPT;
    const hit = anyContains(staticList, ctx.ip) || state.blocked(ctx.ip, now()) !== null;
    return hit ? reject(554, "5.7.1", `Service unavailable; client [${ctx.ip}] is blocked`, "blocklist") : ACCEPT;
  };
}
