// MTA-STS (RFC 8461): a domain's published promise that its MX hosts speak TLS with
// certificates valid for their names. Policies are fetched with mailauth (the _mta-sts TXT
// record through our resolver, then https://mta-sts.<domain>/.well-known/mta-sts.txt checked
// against Bun's CA list and NODE_EXTRA_CA_CERTS) and cached in memory until they expire, and in
// the policy state (policy.db, or a cluster's Redis) so a restart or another node knows them too
// (RFC 8461 3.3). applyStsPolicy turns a policy and the domain's MX hosts into the hosts that
// may be used and the TLS policy each must meet.

import type { MTASTSPolicy, MTASTSPolicyResult } from "mailauth";
import { getPolicy, validateMx, type MTASTSOptions } from "mailauth/lib/mta-sts.js";
import { DeliveryFailure } from "./result.ts";
import type { MailHost } from "./mx.ts";
import type { TlsPolicy } from "./tls-policy.ts";

export type StsPolicy = MTASTSPolicy;
export type FetchPolicy = (domain: string, known: MTASTSPolicy | null, opts: MTASTSOptions) => Promise<MTASTSPolicyResult>;
/** mailauth's resolver shape: node:dns style records and error codes (Resolver.forMailauth). */
export type StsResolver = (name: string, rrtype: string) => Promise<unknown>;

export interface StsLookup {
  readonly policy: StsPolicy;
  readonly status: MTASTSPolicyResult["status"];
  /** Why the policy could not be fetched (the cached one, or none, is applied). */
  readonly error: Error | null;
}

/** Policies we hold beyond this are dropped oldest first; a dropped one is fetched again. */
const MAX_CACHED = 10_000;

/** Where policies outlive the process: the policy state's MTA-STS entries (JSON text). */
export interface StsStore {
  stsPolicy(domain: string): string | null | Promise<string | null>;
  saveStsPolicy(domain: string, json: string, expiresAt: number): void;
  removeStsPolicy(domain: string): void;
}

export class MtaStsPolicies {
  private readonly cache = new Map<string, StsPolicy>();

  constructor(
    private readonly fetch: FetchPolicy = getPolicy as FetchPolicy,
    private readonly store: StsStore | null = null,
  ) {}

  /**
   * The policy in force for a domain. The TXT record is looked up every time (RFC 8461 5.1: an
   * updated policy must be noticed before a delivery fails for an old one); the HTTPS fetch
   * happens only when its id changed or the cached policy expired (mailauth's getPolicy).
   */
  async lookup(domain: string, resolver: StsResolver, timeoutMs: number): Promise<StsLookup> {
    const key = domain.toLowerCase();
    const known = this.cache.get(key) ?? (await this.stored(key));
    let res: MTASTSPolicyResult;
    try {
      res = await this.fetch(key, known, { resolver: resolver as MTASTSOptions["resolver"], timeout: timeoutMs });
    } catch (err) {
      res = { policy: known ?? { id: false, mode: "none" }, status: "errored" };
      res.policy = { ...res.policy, error: err as Error };
    }
    const { error, ...policy } = res.policy;
    if (policy.id && policy.expires) {
      this.cache.delete(key);
      this.cache.set(key, policy);
      if (this.cache.size > MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
      if (known?.id !== policy.id || known?.expires !== policy.expires) this.store?.saveStsPolicy(key, JSON.stringify(policy), Date.parse(policy.expires));
    } else if (res.status === "not_found") {
      this.cache.delete(key);
      if (known) this.store?.removeStsPolicy(key);
    }
    return { policy, status: res.status, error: error ?? null };
  }

  /** A policy kept from before (a restart, or another node of the cluster); null when none or unreadable. */
  private async stored(domain: string): Promise<StsPolicy | null> {
    if (!this.store) return null;
    try {
      const json = await this.store.stsPolicy(domain);
      const p = json === null ? null : (JSON.parse(json) as StsPolicy);
      return p && p.id && p.expires && Date.parse(p.expires) > Date.now() ? p : null;
    } catch {
      return null;
    }
  }
}

export interface Target {
  readonly host: MailHost;
  readonly tls: TlsPolicy;
}

export interface Plan {
  readonly targets: readonly Target[];
  /** Hosts a "testing" policy would have refused: logged, used anyway (RFC 8461 5). */
  readonly wouldRefuse: readonly string[];
}

/**
 * RFC 8461 4.1, 5: under "enforce" only MX hosts matching the policy's patterns may be used,
 * each with a verified certificate (TLS 1.2 or newer); none matching is a temporary failure,
 * retried after the policy has been looked up again. "testing" and "none" change nothing.
 */
export function applyStsPolicy(domain: string, hosts: readonly MailHost[], configured: TlsPolicy, policy: StsPolicy | null): Plan {
  const mode = policy?.mode ?? "none";
  if (!policy || mode === "none") return { targets: hosts.map((host) => ({ host, tls: configured })), wouldRefuse: [] };
  const matching = hosts.filter((h) => validateMx(h.name, policy).valid);
  const refused = hosts.filter((h) => !matching.includes(h)).map((h) => h.name);
  if (mode === "testing") return { targets: hosts.map((host) => ({ host, tls: configured })), wouldRefuse: refused };
  if (!matching.length) {
    throw DeliveryFailure.temporary(`4.7.5 MTA-STS policy of ${domain} allows none of its MX hosts (${refused.join(", ")})`);
  }
  // "verify" is the strongest policy there is, so it overrides whatever was configured.
  return { targets: matching.map((host) => ({ host, tls: "verify" })), wouldRefuse: [] };
}
