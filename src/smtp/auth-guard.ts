// Brute-force protection for SMTP AUTH: failures are counted per client IP within a window;
// at the limit the IP goes on the dynamic blocklist for block_for, so its next connections
// are refused before the greeting, on every listener.

import { LRUCache } from "lru-cache";
import type { SubmissionConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { PolicyStore } from "../policy/store.ts";

export class AuthGuard {
  private readonly failures: LRUCache<string, number>;

  constructor(
    private readonly cfg: SubmissionConfig["authFailures"],
    private readonly policy: PolicyStore,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.failures = new LRUCache({ max: 20_000, ttl: cfg.windowMs });
  }

  /** Counts a failure; true when the IP has just been blocked. */
  failed(ip: string): boolean {
    const n = (this.failures.get(ip) ?? 0) + 1;
    this.failures.set(ip, n, { noUpdateTTL: this.failures.has(ip) });
    if (n < this.cfg.max) return false;
    const t = this.now();
    this.failures.delete(ip);
    this.policy.block(ip.includes(":") ? `${ip}/128` : `${ip}/32`, "too many authentication failures", t, t + this.cfg.blockForMs);
    this.log.warn("client blocked after authentication failures", { client_ip: ip, failures: n, blocked_for_ms: this.cfg.blockForMs });
    return true;
  }

  succeeded(ip: string): void {
    this.failures.delete(ip);
  }
}
