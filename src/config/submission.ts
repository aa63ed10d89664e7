// The submission section: authenticated mail from users on 587 (STARTTLS) and 465 (TLS).

import { resolve } from "node:path";
import { parseRate } from "../units.ts";
import { join, Reader } from "./reader.ts";
import type { ListenAddress, RateLimit, SubmissionConfig, TlsFiles } from "./types.ts";

export function parseSubmission(
  r: Reader,
  value: unknown,
  cwd: string,
  mxTls: TlsFiles | null,
  listen: (list: unknown[], path: string) => ListenAddress[],
  acme = false,
): SubmissionConfig | null {
  if (value === undefined || value === false) return null;
  const path = "submission";
  const o = r.section(value ?? {}, path, ["starttls", "tls", "certificates", "rate_limit", "auth_failures", "auth_concurrency", "auth_rate_limit"]);
  const starttls = listen(r.list(o, "starttls", path) ?? ["0.0.0.0:587"], join(path, "starttls"));
  const implicitTls = listen(r.list(o, "tls", path) ?? ["0.0.0.0:465"], join(path, "tls"));
  const certificates = (r.list(o, "certificates", path) ?? []).flatMap((item, i) => {
    const p = join(join(path, "certificates"), i);
    const c = r.section(item, p, ["cert_file", "key_file"]);
    const cert = r.string(c, "cert_file", p, "");
    const key = r.string(c, "key_file", p, "");
    if (!cert || !key) return r.fail(p, "cert_file and key_file", item) ?? [];
    return [{ certFile: resolve(cwd, cert), keyFile: resolve(cwd, key) }];
  });
  if (certificates.length === 0 && mxTls) certificates.push(mxTls);
  // Without certificate files, submission uses the ACME certificate (src/runtime.ts).
  if (certificates.length === 0 && !acme) r.problems.push(`${path}.certificates: submission needs a certificate (passwords never cross the network in clear); add one, or set smtp.tls or acme`);
  const af = r.section(o.auth_failures, join(path, "auth_failures"), ["max", "window", "block_for"]);
  return {
    starttls,
    implicitTls,
    certificates,
    rateLimit: rate(r, o.rate_limit, join(path, "rate_limit")),
    authFailures: {
      max: r.int(af, "max", join(path, "auth_failures"), 5, 1, 1000),
      windowMs: r.duration(af, "window", join(path, "auth_failures"), 600_000, 1000),
      blockForMs: r.duration(af, "block_for", join(path, "auth_failures"), 3_600_000, 1000),
    },
    // Each check is ~250 ms of CPU and 64 MiB (argon2id): two at once on a 2-core host.
    authConcurrency: r.int(o, "auth_concurrency", path, 2, 1, 64),
    // Postfix's smtpd_client_auth_rate_limit, per client (an IPv6 client's /64).
    authRateLimit: o.auth_rate_limit === undefined || o.auth_rate_limit === null ? { messages: 30, windowMs: 60_000 } : authRate(r, o.auth_rate_limit, join(path, "auth_rate_limit")),
  };
}

function authRate(r: Reader, v: unknown, path: string): RateLimit | null {
  if (v === "off") return null;
  const limit = typeof v === "string" ? parseRate(v) : undefined;
  return limit ?? r.fail(path, 'attempts per window such as "30/1m" (or "off")', v) ?? null;
}

function rate(r: Reader, v: unknown, path: string): RateLimit | null {
  if (v === undefined || v === null) return { messages: 1000, windowMs: 86_400_000 };
  if (v === "off") return null;
  const limit = typeof v === "string" ? parseRate(v) : undefined;
  return limit ?? r.fail(path, 'messages per window such as "500/1d"', v) ?? null;
}
