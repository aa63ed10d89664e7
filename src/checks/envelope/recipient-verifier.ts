// Address verification, like Postfix's verify(8): whether a relay domain's next hop takes an
// address is asked once (deliver/probe.ts) and remembered in the policy state, positive answers for
// 31 days and negative ones for 3 by default; a result older than its refresh time still
// answers while a probe renews it in the background, and a failed renewal keeps it. Probes are
// bounded per next hop: a token bucket (probes_per_hop) and a few at a time (concurrency_per_hop)
// with a short queue; concurrent RCPTs for one address share one probe. A RCPT waits for its
// probe up to `wait`; the probe goes on after that and fills the cache for the client's retry.

import type { RecipientVerificationConfig, Route } from "../../config/types.ts";
import type { ProbeOptions, ProbeResult, ProbeTarget } from "../../deliver/probe.ts";
import type { VerifyEntry } from "../../policy/store.ts";
import { buckets, take, type Buckets } from "./rate-limit.ts";

/** Probes waiting for a slot per next hop; past this a probe is not made (tempfail). */
const MAX_QUEUED_PER_HOP = 100;

export type VerifyOutcome = { readonly kind: "ok" } | { readonly kind: "unknown" } | { readonly kind: "unverified"; readonly why: string };

export interface VerifierDeps {
  /** The policy state: policy.db, or Redis shared by a cluster's nodes. */
  readonly cache: { verifyEntry(address: string): VerifyEntry | null | Promise<VerifyEntry | null>; saveVerify(e: VerifyEntry): void };
  readonly probe: (target: ProbeTarget, address: string, opts: ProbeOptions) => Promise<ProbeResult>;
  readonly now: () => number;
  /** Told about every probe: its result kind, or why it was not made (rate_limited, queue_full). */
  readonly onProbe: (result: string, route: Route, address: string, reply: string) => void;
}

export class RecipientVerifier {
  private readonly inFlight = new Map<string, Promise<ProbeResult>>();
  private readonly hops = new Map<string, { running: number; waiting: (() => void)[] }>();
  private readonly rates: Buckets = buckets();

  constructor(private readonly deps: VerifierDeps) {}

  async verify(address: string, route: Route, cfg: RecipientVerificationConfig, heloName: string): Promise<VerifyOutcome> {
    const key = address.toLowerCase();
    const t = this.deps.now();
    let cached = this.deps.cache.verifyEntry(key);
    if (cached instanceof Promise) cached = await cached;
    if (cached && cached.expiresAt > t) {
      if (cached.refreshAt <= t) void this.probe(key, address, route, cfg, heloName);
      return { kind: cached.status };
    }
    const result = await this.within(this.probe(key, address, route, cfg, heloName), cfg.waitMs);
    if (!result) return { kind: "unverified", why: "address verification in progress" };
    if (result.kind === "tempfail") return { kind: "unverified", why: "the next hop could not be asked" };
    return { kind: result.kind };
  }

  /** Starts a probe, or joins the one running for the address; definite answers are saved. Never rejects. */
  private probe(key: string, address: string, route: Route, cfg: RecipientVerificationConfig, heloName: string): Promise<ProbeResult> {
    const running = this.inFlight.get(key);
    if (running) return running;
    const p = this.probeNow(address, route, cfg, heloName)
      .then((r) => {
        if (r.kind !== "tempfail") {
          const t = this.deps.now();
          const ok = r.kind === "ok";
          this.deps.cache.saveVerify({
            address: key,
            status: r.kind,
            reply: r.reply,
            checkedAt: t,
            refreshAt: t + (ok ? cfg.positiveRefreshMs : cfg.negativeRefreshMs),
            expiresAt: t + (ok ? cfg.positiveTtlMs : cfg.negativeTtlMs),
          });
        }
        return r;
      })
      .finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private async probeNow(address: string, route: Route, cfg: RecipientVerificationConfig, heloName: string): Promise<ProbeResult> {
    const report = (r: ProbeResult, kind: string = r.kind) => (this.deps.onProbe(kind, route, address, r.reply), r);
    if (!take(this.rates, route.uri, cfg.probesPerHop, this.deps.now())) return report({ kind: "tempfail", reply: "not probed: probes_per_hop reached" }, "rate_limited");
    const release = await this.slot(route.uri, cfg.concurrencyPerHop);
    if (!release) return report({ kind: "tempfail", reply: "not probed: too many probes waiting for the next hop" }, "queue_full");
    try {
      const target = { host: route.host, port: route.port, lmtp: route.protocol === "lmtp", tls: route.tls ?? "opportunistic" };
      return report(await this.deps.probe(target, address, { heloName, timeoutMs: cfg.timeoutMs }).catch((err: Error) => ({ kind: "tempfail" as const, reply: err.message })));
    } finally {
      release();
    }
  }

  /** One of the hop's `limit` slots (in turn); null when too many wait already. */
  private async slot(hop: string, limit: number): Promise<(() => void) | null> {
    let h = this.hops.get(hop);
    if (!h) this.hops.set(hop, (h = { running: 0, waiting: [] }));
    const state = h;
    if (state.running >= limit) {
      if (state.waiting.length >= MAX_QUEUED_PER_HOP) return null;
      await new Promise<void>((resolve) => state.waiting.push(resolve));
    } else state.running++;
    return () => {
      const next = state.waiting.shift();
      // The slot passes straight to the next probe in line; the count only drops when none waits.
      if (next) next();
      else if (--state.running === 0) this.hops.delete(hop);
    };
  }

  private within<T>(p: Promise<T>, ms: number): Promise<T | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
      timer.unref?.();
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }
}
