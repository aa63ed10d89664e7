// RCPT stage: never an open relay. A recipient is accepted when its domain is one we relay
// for, or when the client is in relay_networks and there is a route to the domain.

import type { RelayConfig, Route } from "../config/types.ts";
import { hasRoutingSyntax, type Mailbox } from "../smtp/address.ts";
import { ACCEPT, reject, type Verdict } from "../verdict.ts";
import type { RcptContext } from "./types.ts";

export function routeFor(relay: RelayConfig, rcpt: Mailbox, mxDelivery = false): Route | null {
  if (rcpt.isLiteral) return null;
  const configured = relay.domains.get(rcpt.domain) ?? relay.smarthost;
  if (configured) return configured;
  return mxDelivery ? { protocol: "mx", host: rcpt.domain, port: 25, uri: `mx://${rcpt.domain}` } : null;
}

export function relayPolicy(relay: RelayConfig, mxDelivery = false) {
  return (ctx: RcptContext): Verdict => {
    const { recipient: rcpt, client } = ctx;
    const ours = !rcpt.isLiteral && relay.domains.has(rcpt.domain);
    if (ours) {
      // Trusted clients may use any local part; from the internet, routing syntax in the
      // local part would turn the next hop into a relay for whoever sent it.
      if (!client.trusted && hasRoutingSyntax(rcpt.localPart)) return denied("routing syntax in local part");
      return ACCEPT;
    }
    if (!client.trusted && client.user === null) return denied("domain not relayed for untrusted client");
    if (!routeFor(relay, rcpt, mxDelivery)) return reject(550, "5.4.4", "Unable to route: no route to destination domain", "no route");
    return ACCEPT;
  };
}

const denied = (reason: string) => reject(554, "5.7.1", "Relaying denied", reason);
