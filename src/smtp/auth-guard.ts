// What SMTP AUTH may cost. Password checks (argon2id: ~250 ms of CPU and 64 MiB each) run a
// few at a time over all clients, and a client may start only so many per window; beyond
// either the attempt is answered "454 4.7.0" without checking anything. Failures are counted
// per client within a window; at the limit the client goes on the dynamic blocklist for
// block_for, so its next connections are refused before the greeting, on every listener.
// A client is its key (net/cidr.ts clientKey): the address, or an IPv6 client's /64.

import { LRUCache } from "lru-cache";
import { buckets, take, type Buckets } from "../checks/envelope/rate-limit.ts";
import type { SubmissionConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { PolicyStore } from "../policy/store.ts";

export type AuthLimits = Pick<SubmissionConfig, "authFailures" | "authConcurrency" | "authRateLimit">;

/** Why an attempt was not checked: the client's attempt rate, or every password slot busy. */
export type AuthRefusal = "rate" | "busy";

export class AuthGuard {
  private readonly failures: LRUCache<string, number>;
  private readonly attempts: Buckets;
  private running = 0;

  constructor(
    private readonly cfg: AuthLimits,
    private readonly policy: PolicyStore,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.failures = new LRUCache({ max: 20_000, ttl: cfg.authFailures.windowMs });
    this.attempts = buckets();
  }

  /** Takes a password-check slot for `key`, or says why not; a taken slot is given back with release(). */
  admit(key: string): AuthRefusal | null {
    const rate = this.cfg.authRateLimit;
    if (rate && !take(this.attempts, key, rate, this.now())) return "rate";
    if (this.running >= this.cfg.authConcurrency) return "busy";
    this.running++;
    return null;
  }

  release(): void {
    this.running = Math.max(0, this.running - 1);
  }

  /** Counts a failure; true when the client has just been blocked. */
  failed(key: string): boolean {
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n, { noUpdateTTL: this.failures.has(key) });
    if (n < this.cfg.authFailures.max) return false;
    const t = this.now();
    this.failures.delete(key);
    const cidr = key.includes("/") ? key : key.includes(":") ? `${key}/128` : `${key}/32`;
    this.policy.block(cidr, "too many authentication failures", t, t + this.cfg.authFailures.blockForMs);
    this.log.warn("client blocked after authentication failures", { client: cidr, failures: n, blocked_for_ms: this.cfg.authFailures.blockForMs });
    return true;
  }

  succeeded(key: string): void {
    this.failures.delete(key);
  }
}
