// The smtp keys of the edge hardening (issue 8): content deadlines, content limits, the error
// limit and stress mode, plus queue.min_free_space. Each maps to the Postfix setting named in
// its comment, with Postfix's default where there is one.

import type { Obj, Reader } from "./reader.ts";
import type { SmtpConfig } from "./types.ts";

export const SMTP_HARDENING_KEYS = ["data_timeout", "min_data_rate", "nul_bytes", "max_header_size", "max_header_section", "error_limit", "stress"] as const;

type Hardening = Pick<SmtpConfig, "dataTimeoutMs" | "minDataRate" | "nulBytes" | "maxHeaderSize" | "maxHeaderSection" | "errorLimit" | "stress">;

export function smtpHardening(r: Reader, smtp: Obj): Hardening {
  const stress = r.section(smtp.stress, "smtp.stress", ["threshold", "timeout", "error_limit"]);
  const maxHeaderSize = r.size(smtp, "max_header_size", "smtp", 100 * 1024, 1024);
  const maxHeaderSection = r.size(smtp, "max_header_section", "smtp", 1024 * 1024, 1024);
  if (maxHeaderSection < maxHeaderSize) r.fail("smtp.max_header_section", `a size at least smtp.max_header_size (${maxHeaderSize} bytes)`, smtp.max_header_section);
  return {
    dataTimeoutMs: r.duration(smtp, "data_timeout", "smtp", 600_000, 1000),
    // Postfix's smtpd_min_data_rate (500 bytes/s).
    minDataRate: r.size(smtp, "min_data_rate", "smtp", 500, 0),
    nulBytes: r.oneOf(smtp, "nul_bytes", "smtp", ["strip", "reject"], "strip"),
    maxHeaderSize,
    maxHeaderSection,
    // Postfix's smtpd_hard_error_limit: 20, and 1 under stress.
    errorLimit: r.int(smtp, "error_limit", "smtp", 20, 1, 100_000),
    stress: {
      threshold: r.int(stress, "threshold", "smtp.stress", 80, 0, 100),
      // Postfix's smtpd_timeout under stress: 10s.
      timeoutMs: r.duration(stress, "timeout", "smtp.stress", 10_000, 1000),
      errorLimit: r.int(stress, "error_limit", "smtp.stress", 1, 1, 100_000),
    },
  };
}

/** Default: four messages of the largest size (Postfix insists on at least 1.5). */
export function minFreeSpace(r: Reader, queue: Obj, maxMessageSize: number): number {
  return r.size(queue, "min_free_space", "queue", 4 * maxMessageSize, 0);
}
