// How hard to insist on TLS towards one destination, and what that means for nodemailer's
// SMTPConnection (checked under Bun in tests/unit/tls-policy.test.ts):
//   none           never STARTTLS (ignoreTLS).
//   opportunistic  STARTTLS when offered, certificate not checked; plain text when it is not
//                  offered or refused. A failed handshake is retried once in plain text on a new
//                  connection to the same host (connect.ts), as Postfix's "may" level does.
//   required       STARTTLS must be offered and succeed; certificate not checked.
//   verify         as required, and the certificate must chain to a trusted CA and name the MX
//                  host (RFC 6125 via node:tls; the MX name comes from DNS, so this is only as
//                  strong as DNS, which is what MTA-STS asks for: RFC 8461 4.2).
// TLS 1.2 or newer in every case. "required" and "verify" never send STARTTLS to a server that
// did not offer it (nodemailer's requireTLS would, RFC 3207 4 says not to): the session is
// refused after EHLO instead, "4.7.5 TLS required but not available", a temporary failure.

import type { OutboundConfig, TlsPolicy } from "../config/types.ts";

export type { TlsPolicy };

export const TLS_MIN_VERSION = "TLSv1.2";

/** The configured policy for a recipient domain: outbound.tls_policy.domains, else its default. */
export function tlsPolicyFor(tls: OutboundConfig["tlsPolicy"], domain: string): TlsPolicy {
  return tls.byDomain.get(domain.toLowerCase()) ?? tls.default;
}

/** Whether the policy demands an encrypted session (plain text is a failure). */
export const demandsTls = (policy: TlsPolicy): boolean => policy === "required" || policy === "verify";

export interface StartTlsOptions {
  readonly ignoreTLS: boolean;
  readonly opportunisticTLS: boolean;
  /** Always false: see the top of this file. */
  readonly requireTLS: false;
  readonly servername?: string;
  readonly tls: { readonly rejectUnauthorized: boolean; readonly minVersion: "TLSv1.2"; readonly servername?: string };
}

/**
 * SMTPConnection options for a policy. `servername` (the MX host name) goes out as SNI and is
 * the name a certificate is checked against under "verify", though we connect to an address.
 */
export function startTlsOptions(policy: TlsPolicy, servername?: string): StartTlsOptions {
  const sni = servername ? { servername } : {};
  return {
    ignoreTLS: policy === "none",
    opportunisticTLS: policy === "opportunistic",
    requireTLS: false,
    ...sni,
    tls: { rejectUnauthorized: policy === "verify", minVersion: TLS_MIN_VERSION, ...sni },
  };
}
