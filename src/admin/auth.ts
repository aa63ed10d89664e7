// Bearer-token check for /admin/*: constant-time comparison, a generic 401 with
// WWW-Authenticate, every failure logged with the client address, and clients that keep
// failing answered 429 without a log line (they cannot guess a 32+ character token, but they
// can flood the log). The right token always gets in.

import { timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { LRUCache } from "lru-cache";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { clientKey } from "../net/cidr.ts";
import { ApiError } from "./errors.ts";

const MAX_FAILURES = 10;
const FAILURE_WINDOW_MS = 60_000;

const digest = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest();

export interface AuthOptions {
  /** The expected token now (it may change on reload); null disables the admin routes. */
  readonly token: () => string | null;
  readonly clientIp: (req: Request, env: unknown) => string;
  readonly log: Logger;
  readonly metrics: Metrics;
}

export function bearerAuth(opts: AuthOptions): MiddlewareHandler {
  const failures = new LRUCache<string, number>({ max: 2_000, ttl: FAILURE_WINDOW_MS });
  return async (c, next) => {
    const expected = opts.token();
    if (expected === null) throw new ApiError(503, "admin_disabled", "no admin token is configured; set admin.token_file (or admin.token_env) and reload");
    const ip = clientKey(opts.clientIp(c.req.raw, c.env), 64); // an IPv6 client's /64 is one client
    const header = c.req.header("authorization") ?? "";
    const given = /^Bearer (\S+)$/i.exec(header)?.[1] ?? "";
    // Comparing digests keeps the time independent of where, or whether, the lengths differ.
    // The token is checked before the throttle: whoever holds it (the nightly backup) is never
    // locked out by another local user's failures from the same address.
    if (!timingSafeEqual(digest(given), digest(expected))) {
      if ((failures.get(ip) ?? 0) >= MAX_FAILURES) {
        c.header("Retry-After", String(FAILURE_WINDOW_MS / 1000));
        throw new ApiError(429, "too_many_failures", "too many failed authentication attempts; try again later");
      }
      failures.set(ip, (failures.get(ip) ?? 0) + 1, { noUpdateTTL: failures.has(ip) });
      opts.metrics.adminAuthFailures.inc();
      opts.log.warn("admin authentication failed", { client_ip: ip, path: c.req.path, had_token: given !== "" });
      c.header("WWW-Authenticate", 'Bearer realm="mailraven"');
      throw new ApiError(401, "unauthorized", "authentication required");
    }
    await next();
  };
}
