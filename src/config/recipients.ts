// Which recipients of a relay domain exist: per domain in relay.domains, a static list (inline
// `recipients`, or `recipients_file`, read again on every reload) and/or `verify_recipients`
// (a probe to the next hop, like Postfix's reject_unverified_recipient); and the probes'
// settings in relay.recipient_verification.

import { domainToASCII } from "node:url";
import { parseRate } from "../units.ts";
import { join, Reader, type Obj } from "./reader.ts";
import type { DomainRecipients, RecipientVerificationConfig } from "./types.ts";

/** The keys a relay.domains mapping may carry for recipient validation. */
export const RECIPIENT_KEYS = ["recipients", "recipients_file", "verify_recipients"] as const;

/** A domain's rules from its relay.domains mapping; null when it sets none. */
export function domainRecipients(r: Reader, o: Obj, path: string, readFile: (path: string) => string): DomainRecipients | null {
  const inline = r.list(o, "recipients", path);
  const file = o.recipients_file === undefined || o.recipients_file === null ? null : r.string(o, "recipients_file", path, "");
  const verify = o.verify_recipients ?? false;
  if (typeof verify !== "boolean") r.fail(join(path, "verify_recipients"), "true or false", verify);
  if (inline === undefined && file === null && verify !== true) return null;

  let list: Set<string> | null = null;
  const add = (entry: unknown, where: string) => {
    const e = typeof entry === "string" ? recipientEntry(entry) : null;
    if (e === null) return r.fail(where, 'an address such as "alice@example.org", or "@example.org" for every address of the domain', entry);
    (list ??= new Set()).add(e);
  };
  inline?.forEach((entry, i) => add(entry, join(join(path, "recipients"), i)));
  if (file) {
    let text: string | null = null;
    try {
      text = readFile(file);
    } catch (err) {
      r.problems.push(`${join(path, "recipients_file")}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    // One address per line; blank lines and # comments are skipped (a file with none accepts nobody).
    list ??= new Set();
    text?.split("\n").forEach((line, i) => {
      const entry = line.replace(/#.*$/, "").trim();
      if (entry) add(entry, `${file}:${i + 1}`);
    });
  }
  return { list, verify: verify === true, file, inline: inline ? [...inline].map(String) : null };
}

/** "Alice@Example.org" -> "alice@example.org"; "@example.org" stays a domain entry; null when neither. */
function recipientEntry(text: string): string | null {
  const t = text.trim();
  const at = t.lastIndexOf("@");
  if (at < 0 || /\s/.test(t)) return null;
  const domain = domainToASCII(t.slice(at + 1).toLowerCase().replace(/\.$/, ""));
  if (!domain) return null;
  return `${t.slice(0, at).toLowerCase()}@${domain}`;
}

export function parseRecipientVerification(r: Reader, value: unknown): RecipientVerificationConfig {
  const path = "relay.recipient_verification";
  const o = r.section(value, path, ["positive_ttl", "negative_ttl", "positive_refresh", "negative_refresh", "wait", "timeout", "unreachable", "concurrency_per_hop", "probes_per_hop"]);
  const rateText = o.probes_per_hop ?? "60/1m";
  const rate = typeof rateText === "string" ? parseRate(rateText) : undefined;
  if (!rate) r.fail(join(path, "probes_per_hop"), 'probes per window such as "60/1m"', rateText);
  // Postfix verify(8)'s defaults: address_verify_positive_expire_time 31d, _refresh_time 7d,
  // address_verify_negative_expire_time 3d, _refresh_time 3h.
  return {
    positiveTtlMs: r.duration(o, "positive_ttl", path, 31 * 86_400_000, 60_000),
    negativeTtlMs: r.duration(o, "negative_ttl", path, 3 * 86_400_000, 60_000),
    positiveRefreshMs: r.duration(o, "positive_refresh", path, 7 * 86_400_000, 60_000),
    negativeRefreshMs: r.duration(o, "negative_refresh", path, 3 * 3_600_000, 60_000),
    waitMs: r.duration(o, "wait", path, 9_000, 100),
    timeoutMs: r.duration(o, "timeout", path, 30_000, 1000),
    unreachable: r.oneOf(o, "unreachable", path, ["defer", "accept"] as const, "defer"),
    concurrencyPerHop: r.int(o, "concurrency_per_hop", path, 2, 1, 100),
    probesPerHop: rate ?? { messages: 60, windowMs: 60_000 },
  };
}
