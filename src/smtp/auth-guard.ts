// What SMTP AUTH may cost. Password checks (argon2id: ~250 ms of CPU and 64 MiB each) run a
// few at a time over all clients, and a client may start only so many per window; beyond
// either the attempt is answered "454 4.7.0" without checking anything. Failures are counted
// per client within a window; at the limit the client goes on the dynamic blocklist for
// block_for, so its next connections are refused before the greeting, on every listener.
// A client is its key (net/cidr.ts clientKey): the address, or an IPv6 client's /64.
// The attempt rate, the failure counts and the blocklist are policy state, shared by the
// nodes of a cluster; the password-check slots are this node's CPU and stay its own.

import type { SubmissionConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { whenReady, type AuthFailureState, type BlockState, type Maybe, type RateState } from "../state/types.ts";

export type AuthLimits = Pick<SubmissionConfig, "authFailures" | "authConcurrency" | "authRateLimit">;

/** Why an attempt was not checked: the client's attempt rate, or every password slot busy. */
export type AuthRefusal = "rate" | "busy";

export class AuthGuard {
  private running = 0;

  constructor(
    private readonly cfg: AuthLimits,
    private readonly state: RateState & AuthFailureState & BlockState,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes a password-check slot for `key`, or says why not; a taken slot is given back with release(). */
  admit(key: string): Maybe<AuthRefusal | null> {
    const rate = this.cfg.authRateLimit;
    if (!rate) return this.slot();
    return whenReady(this.state.take([{ key: `auth ${key}`, limit: rate }], this.now()), (empty) => (empty === -1 ? this.slot() : "rate"));
  }

  release(): void {
    this.running = Math.max(0, this.running - 1);
  }

  /** Counts a failure; true when the client has just been blocked. */
  failed(key: string): Maybe<boolean> {
    const af = this.cfg.authFailures;
    return whenReady(this.state.countAuthFailure(key, af.windowMs, this.now()), (n) => {
      if (n < af.max) return false;
      const t = this.now();
      this.state.clearAuthFailures(key);
      const cidr = key.includes("/") ? key : key.includes(":") ? `${key}/128` : `${key}/32`;
      const done = this.state.block(cidr, "too many authentication failures", t, t + af.blockForMs);
      if (done instanceof Promise) done.catch((err) => this.log.error("could not block a client after authentication failures", { client: cidr, error: err }));
      this.log.warn("client blocked after authentication failures", { client: cidr, failures: n, blocked_for_ms: af.blockForMs });
      return true;
    });
  }

  succeeded(key: string): void {
    this.state.clearAuthFailures(key);
  }

  private slot(): AuthRefusal | null {
    if (this.running >= this.cfg.authConcurrency) return "busy";
    this.running++;
    return null;
  }
}
