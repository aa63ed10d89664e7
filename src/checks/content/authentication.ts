// Sender authentication of inbound mail: SPF, DKIM, DMARC and ARC through mailauth, reported in
// one Authentication-Results header (RFC 8601) and turned into a verdict by per-domain policy.
// mailauth detects; the policy passed in decides (reject, tag, defer or accept).

import type { Readable } from "node:stream";
import { domainToASCII } from "node:url";
import type { AuthenticateResult, DNSResolver } from "mailauth";
import { ACCEPT, defer, reject, type Verdict } from "../../verdict.ts";
import type { ContentCheck, ContentContext, ContentResult } from "../types.ts";

export interface AuthenticationPolicy {
  /** SPF "fail" (-all): refuse the message, or only report it in the header. */
  readonly spfFail: "reject" | "tag";
  /** Refuse a DMARC failure when the applied policy is reject. */
  readonly dmarcReject: boolean;
  /** A DNS failure that could change the verdict: ask the client to retry, or accept. */
  readonly tempError: "defer" | "accept";
}

export interface AuthenticationOptions {
  /** Our authserv-id (the relay's hostname). */
  readonly authservId: string;
  /** A node:dns shaped resolver, e.g. Resolver.forMailauth (never node:dns itself under Bun). */
  readonly resolver: (name: string, rrtype: string) => Promise<unknown>;
  /** Policy for a message, given the recipient domains that are ours (ctx.localDomains). */
  readonly policy: (localDomains: readonly string[]) => AuthenticationPolicy;
  /** Called with any exception (mailauth's, the policy's); the check then fails open. */
  readonly onError: (err: Error) => void;
}

const HEADER = "Authentication-Results";

/**
 * Throws at construction when authservId is not a host name: mailauth (strict) would refuse it
 * on every message, and the check would silently fail open for all mail.
 */
export function authenticationCheck(opts: AuthenticationOptions): ContentCheck {
  const authservId = normalizeId(opts.authservId);
  if (!/^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$/.test(authservId)) {
    throw new TypeError(`invalid authserv-id ${JSON.stringify(opts.authservId)}: expecting a host name`);
  }
  // RFC 8601 section 5: a header claiming our authserv-id that we did not write is a forgery.
  const drop = (name: string, value: string) => name.trim().toLowerCase() === HEADER.toLowerCase() && authservIdOf(value) === authservId;

  const none = `${HEADER}: ${authservId}; none`;

  return async (ctx: ContentContext): Promise<ContentResult> => {
    try {
      // mailauth only pipes the input and listens for "error": any NodeJS.ReadableStream will do.
      // Loaded on first use: a relay without sender authentication never pays for mailauth.
      const { authenticate } = await import("mailauth");
      const res = await authenticate(ctx.message() as Readable, {
        ip: ctx.client.ip,
        helo: ctx.client.helo,
        sender: ctx.sender, // "" is the null sender: SPF then checks the HELO identity (RFC 7208 2.4)
        mta: authservId,
        resolver: opts.resolver as DNSResolver,
        disableBimi: true,
        // Strict: RFC results, e.g. a body hash mismatch is dkim=fail (RFC 6376 6.1.3, RFC 8601
        // 2.7.1), rsa-sha1 is dkim=policy (RFC 8301), and A-R carries header.d and arc=.
        strict: true,
      });
      const header = authResultsHeader(res.headers);
      if (!header) opts.onError(new Error("mailauth returned no Authentication-Results header"));
      return { verdict: decide(res, opts.policy(ctx.localDomains)), add: [header ?? none], drop };
    } catch (err) {
      opts.onError(err instanceof Error ? err : new Error(String(err)));
      // Fail open, but say so: "none" under our id (RFC 8601 2.2); forged ones still go.
      return { verdict: ACCEPT, add: [none], drop };
    }
  };
}

/** The verdict for mailauth's findings under a policy. Definite failures first, then DNS trouble. */
function decide(res: AuthenticateResult, policy: AuthenticationPolicy): Verdict {
  const spf = res.spf ? res.spf.status.result : "none";
  const dmarc = res.dmarc || null;
  const dkimTemp = res.dkim.results.some((r) => r.status.result === "temperror");
  // DMARC fails when nothing aligned passed; if an SPF or DKIM lookup failed, one might have.
  const dmarcFailFinal = dmarc?.status.result === "fail" && spf !== "temperror" && !dkimTemp;
  const dmarcUnknown = dmarc?.status.result === "temperror" || (dmarc?.status.result === "fail" && !dmarcFailFinal);
  // dmarc.policy is the applied one: p, or sp/np for a subdomain, one level lower with t=y.
  const dmarcMayReject = dmarc?.policy === "reject" || (dmarc?.status.result === "temperror" && !dmarc.policy);

  if (policy.dmarcReject && dmarcFailFinal && dmarc?.policy === "reject") {
    const domain = dmarc.status.header?.from ?? dmarc.policyDomain ?? dmarc.domain;
    return reject(550, "5.7.1", `Message rejected due to DMARC policy of ${replySafe(domain)}`, "dmarc");
  }
  if (policy.spfFail === "reject" && spf === "fail" && res.spf) {
    return reject(550, "5.7.1", `Message rejected: SPF check failed for ${replySafe(res.spf.domain)}`, "spf");
  }
  // Defer only when a working DNS could have turned the answer into a rejection.
  const couldReject = (policy.spfFail === "reject" && spf === "temperror") || (policy.dmarcReject && dmarcUnknown && dmarcMayReject);
  if (policy.tempError === "defer" && couldReject) {
    return defer(451, "4.7.5", "Temporary DNS error during sender authentication, try again later", "auth temperror");
  }
  return ACCEPT;
}

/**
 * The Authentication-Results field out of mailauth's header block (which also holds
 * Received-SPF), as one header: continuation lines start with whitespace, no empty line, no
 * bare CR or LF, no other control characters. No final CRLF (the caller adds it).
 */
function authResultsHeader(block: string): string | null {
  const fields = block.split(/\r?\n(?![ \t])/);
  const field = fields.find((f) => f.toLowerCase().startsWith(`${HEADER.toLowerCase()}:`));
  if (!field) return null;
  const lines = field
    .split(/\r\n|\r|\n/)
    .map((l) => l.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "").trimEnd())
    .filter((l) => l.trim() !== "");
  return lines.map((l, i) => (i === 0 || /^[ \t]/.test(l) ? l : ` ${l}`)).join("\r\n");
}

/**
 * The authserv-id of an unfolded Authentication-Results value, normalized: the first token or
 * quoted-string after any comments; a version number and the rest may follow (RFC 8601 2.2).
 */
function authservIdOf(value: string): string | null {
  let i = skipCfws(value, 0);
  let id = "";
  if (value[i] === '"') {
    for (i++; i < value.length && value[i] !== '"'; i++) id += value[i] === "\\" ? (value[++i] ?? "") : value[i];
  } else {
    id = /^[^\s;()"]*/.exec(value.slice(i))?.[0] ?? "";
  }
  return id ? normalizeId(id) : null;
}

/** Skips whitespace and (nested, escaped) comments from position i. */
function skipCfws(s: string, i: number): number {
  let depth = 0;
  for (; i < s.length; i++) {
    const c = s[i];
    if (c === "\\" && depth > 0) i++;
    else if (c === "(") depth++;
    else if (c === ")" && depth > 0) depth--;
    else if (depth === 0 && c !== " " && c !== "\t" && c !== "\r" && c !== "\n") break;
  }
  return i;
}

/** Host names compare case-insensitively, without a trailing dot, in A-label form. */
function normalizeId(id: string): string {
  const lower = id.trim().toLowerCase().replace(/\.$/, "");
  return /^[\x00-\x7f]*$/.test(lower) ? lower : domainToASCII(lower) || lower;
}

/** A domain from a DNS answer or a client header, safe to put in an SMTP reply line. */
function replySafe(domain: string): string {
  return domain.replace(/[^\x21-\x7e]/g, "?").slice(0, 255);
}
