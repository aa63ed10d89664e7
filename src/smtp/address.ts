// Envelope address handling for relay decisions. smtp-server has already stripped source
// routes (RFC 5321 4.1.1.3 says to ignore them) and refused addresses with more than one "@",
// so a quoted local part hiding an "@" never reaches here.

import { domainToASCII } from "node:url";

export interface Mailbox {
  readonly address: string;
  readonly localPart: string;
  /** Lower-case ASCII (IDNA) form, trailing dot removed: the key for routing. */
  readonly domain: string;
  readonly isLiteral: boolean;
}

export function parseMailbox(address: string): Mailbox | undefined {
  const at = address.lastIndexOf("@");
  if (at <= 0 || at === address.length - 1) return undefined;
  const localPart = address.slice(0, at);
  const rawDomain = address.slice(at + 1);
  if (rawDomain.startsWith("[")) return { address, localPart, domain: rawDomain.toLowerCase(), isLiteral: true };
  const domain = asciiDomain(rawDomain.replace(/\.$/, "").toLowerCase());
  if (!domain) return undefined;
  return { address, localPart, domain, isLiteral: false };
}

/** Letters, digits, hyphens and dots, no A-label, and a last label that is not a number (WHATWG's IPv4 forms). */
const PLAIN = /^(?!.*(?:^|\.)xn--)[a-z0-9.-]*[a-z-][a-z0-9-]*$/;
const NUMERIC_LAST = /(?:^|\.)(?:0x[0-9a-f]*|\d+)$/;

/** domainToASCII, without its cost for the usual already-ASCII name (which it returns as it is). */
function asciiDomain(lower: string): string {
  return PLAIN.test(lower) && !NUMERIC_LAST.test(lower) ? lower : domainToASCII(lower);
}

/**
 * True when the local part carries routing syntax another MTA might honour: "%" (the
 * percent hack), "!" (UUCP bang paths) or "@". Accepting `user%victim.example@our.domain`
 * would let the next hop relay it onward, making us an open relay by proxy.
 */
export function hasRoutingSyntax(localPart: string): boolean {
  return /[%!@]/.test(localPart);
}
