// Opening a session to a next hop: a configured route's host, or a recipient domain's MX hosts
// in preference order (mx.ts) under its TLS policy (tls-policy.ts) and MTA-STS (mta-sts.ts).
// Per MX host: no connection, a 4xx or 5xx greeting, or a TLS policy the host cannot meet moves
// on to the next host. The last host tried decides: its 5xx is permanent, anything else is
// temporary and the recipients wait for the queue's next retry.

import type { OutboundConfig, Route } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { applyStsPolicy, type MtaStsPolicies, type StsResolver } from "./mta-sts.ts";
import { mailHosts, type MxResolver } from "./mx.ts";
import { DeliveryFailure, type FailureResult } from "./result.ts";
import { HopConnection, HopOpenError, type ClientOptions, type HopTarget } from "./smtp-client.ts";
import { tlsPolicyFor } from "./tls-policy.ts";

/** MX hosts are reached on the SMTP port, 25 (RFC 5321 4.5.4.2); never anything else. */
const MX_PORT = 25;
/** Addresses tried per attempt, over all hosts (Postfix's smtp_mx_address_limit). */
export const MAX_MX_ADDRESSES = 5;

/** A configured route: one host, under the route's ?tls= policy (opportunistic unless it says otherwise). */
export function openRoute(route: Route, client: ClientOptions, log: Logger): Promise<HopConnection> {
  const target: HopTarget = { host: route.host, port: route.port, lmtp: route.protocol === "lmtp", tls: route.tls ?? "opportunistic", label: route.uri };
  return openWithFallback(target, client, log, false);
}

export interface MxDeps {
  readonly client: ClientOptions;
  readonly resolver: MxResolver & { readonly forMailauth: StsResolver };
  readonly outbound: Pick<OutboundConfig, "tlsPolicy" | "ignoreMxAddresses">;
  readonly isSelf: (address: string) => boolean;
  /** Null when outbound.mta_sts is off. */
  readonly sts: MtaStsPolicies | null;
  readonly log: Logger;
  readonly random?: () => number;
}

/** A session with the best MX host of `domain` that will talk to us; throws DeliveryFailure. */
export async function openMx(domain: string, deps: MxDeps): Promise<HopConnection> {
  const { log } = deps;
  const hosts = await mailHosts(domain, deps.resolver, { ignore: deps.outbound.ignoreMxAddresses, isSelf: deps.isSelf, random: deps.random });
  const sts = deps.sts ? await deps.sts.lookup(domain, deps.resolver.forMailauth, deps.client.connectTimeoutMs) : null;
  if (sts?.error) log.warn("mta-sts policy not fetched", { domain, status: sts.status, mode: sts.policy.mode, error: sts.error });
  const plan = applyStsPolicy(domain, hosts, tlsPolicyFor(deps.outbound.tlsPolicy, domain), sts?.policy ?? null);
  if (plan.wouldRefuse.length) log.info("mta-sts testing: mx hosts outside the policy used", { domain, mx: plan.wouldRefuse });

  let last: FailureResult = { kind: "temporary", response: `4.4.1 No MX host of ${domain} could be tried` };
  let tried = 0;
  for (const { host, tls } of plan.targets) {
    for (const address of host.addresses) {
      if (tried++ === MAX_MX_ADDRESSES) throw new DeliveryFailure(last);
      const target: HopTarget = { host: address, port: MX_PORT, lmtp: false, tls, servername: host.name, label: `${host.name}[${address}]` };
      try {
        return await openWithFallback(target, deps.client, log, true);
      } catch (err) {
        last = failureOf(err);
        log.info("mx host failed", { domain, mx: target.label, tls_policy: tls, error: last.response });
      }
    }
  }
  throw new DeliveryFailure(last);
}

/**
 * Opens a session; under "opportunistic", a failed TLS handshake is retried once in plain text
 * on a new connection, as Postfix does: that the server offered STARTTLS proves nothing, and
 * the mail gets through to servers whose TLS does not interoperate with ours.
 */
async function openWithFallback(target: HopTarget, client: ClientOptions, log: Logger, mx: boolean): Promise<HopConnection> {
  try {
    return await HopConnection.open(target, client, mx);
  } catch (err) {
    if (!(err instanceof HopOpenError && err.stage === "tls-handshake" && target.tls === "opportunistic")) throw err;
    log.info("tls handshake failed, retrying in plain text", { host: target.label, error: err.message });
    return HopConnection.open({ ...target, tls: "none" }, client, mx);
  }
}

/** What a failed open means for the recipients if no other host does better. */
function failureOf(err: unknown): FailureResult {
  if (!(err instanceof HopOpenError)) return { kind: "temporary", response: `4.4.1 ${(err as Error).message}` };
  if (err.stage === "reply" && err.responseCode && err.responseCode >= 500) return { kind: "permanent", response: err.response ?? err.message };
  return { kind: "temporary", response: err.message };
}
