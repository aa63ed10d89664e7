// RCPT stage: nothing is accepted for a relay domain that its next hop would refuse, so a
// refusal never turns into a bounce to a forged sender (backscatter). Per domain
// (relay.domains), a static list (Postfix's relay_recipient_maps) and/or address verification
// against the next hop (reject_unverified_recipient, see recipient-verifier.ts). It runs before
// greylisting, so no state is written for an address that does not exist.

import type { RelayConfig, Route } from "../../config/types.ts";
import { ACCEPT, defer, reject, type Verdict } from "../../verdict.ts";
import type { RcptContext } from "../types.ts";
import type { VerifyOutcome } from "./recipient-verifier.ts";

export function recipientValidation(relay: RelayConfig, verify: (address: string, route: Route) => Promise<VerifyOutcome>) {
  return async (ctx: RcptContext): Promise<Verdict> => {
    const rcpt = ctx.recipient;
    const rules = rcpt.isLiteral ? undefined : relay.recipients.get(rcpt.domain);
    const route = relay.domains.get(rcpt.domain);
    if (!rules || !route) return ACCEPT;
    const shown = `<${replySafe(rcpt.address)}>`;
    if (rules.list && !rules.list.has(rcpt.address.toLowerCase()) && !rules.list.has(`@${rcpt.domain}`)) {
      return reject(550, "5.1.1", `${shown}: Recipient address rejected: User unknown in relay recipient table`, "recipient not listed");
    }
    if (!rules.verify) return ACCEPT;
    const outcome = await verify(rcpt.address, route);
    if (outcome.kind === "ok") return ACCEPT;
    if (outcome.kind === "unknown") return reject(550, "5.1.1", `${shown}: Recipient address rejected: User unknown`, "recipient unknown at next hop");
    // RFC 3463 X.1.1 with a 4xx: the address could not be checked now; the client retries.
    if (relay.recipientVerification.unreachable === "accept") return ACCEPT;
    return defer(450, "4.1.1", `${shown}: Recipient address rejected: unverified address: ${outcome.why}, try again later`, "recipient unverified");
  };
}

/** An address from the client, safe to repeat in a reply line. */
function replySafe(address: string): string {
  return address.replace(/[^\x21-\x7e]/g, "?").slice(0, 320);
}
