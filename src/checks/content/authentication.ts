// Sender authentication of inbound mail: SPF, DKIM, DMARC and ARC through mailauth, reported in
// one Authentication-Results header (RFC 8601) and turned into a verdict by per-domain policy.
// mailauth detects; the policy passed in decides (reject, tag, defer or accept).
// Within budgets (RFC 6376 6.1 and 8.4 let a verifier limit what it tries): mailauth sees a
// trimmed header section with at most max_dkim_signatures signatures and max_arc_sets ARC sets
// (auth-header.ts; the rest are reported as not checked), reads the message in paced slices,
// looks keys up all at once, and the whole check has a deadline; past it the message is treated
// as after a DNS failure (temp_error: defer or accept), logged and counted.

import { domainToASCII } from "node:url";
import type { AuthenticateResult, DNSResolver } from "mailauth";
import { ACCEPT, defer, reject, type Verdict } from "../../verdict.ts";
import type { ContentCheck, ContentContext, ContentResult } from "../types.ts";
import { authHeader } from "./auth-header.ts";
import { messageResolver, pacedMessage, Pacer } from "./auth-budget.ts";

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
  /** Default: 5 DKIM signatures, 5 ARC sets, 10 s. */
  readonly limits?: { readonly maxDkimSignatures: number; readonly maxArcSets: number; readonly timeoutMs: number };
  /** Sender authentication's share of the event loop, shared by every message (default: one per check). */
  readonly pacer?: Pacer;
  /** A budget was reached: "dkim_signatures", "arc_sets", "header_section" or "deadline". */
  readonly onLimit?: (limit: string) => void;
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
  const { maxDkimSignatures, maxArcSets, timeoutMs } = opts.limits ?? { maxDkimSignatures: 5, maxArcSets: 5, timeoutMs: 10_000 };
  const pacer = opts.pacer ?? new Pacer();
  const onLimit = opts.onLimit ?? (() => {});

  /** Not checked at all (too big, too slow): as a DNS failure that could have decided, per temp_error. */
  const unchecked = (policy: AuthenticationPolicy, why: string): ContentResult => ({
    verdict:
      policy.tempError === "defer" && (policy.spfFail === "reject" || policy.dmarcReject)
        ? defer(451, "4.7.5", "Sender authentication could not be completed, try again later", "auth not checked")
        : ACCEPT,
    // RFC 8601 2.2: "none" says no method ran; the comment says why.
    add: [`${HEADER}: ${authservId}; (not checked: ${why}) none`],
    drop,
  });

  return async (ctx: ContentContext): Promise<ContentResult> => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const policy = opts.policy(ctx.localDomains);
      const trimmed = ctx.head === null ? null : authHeader(ctx.head, maxDkimSignatures, maxArcSets);
      if (ctx.head === null || !trimmed) {
        onLimit("header_section");
        return unchecked(policy, "header section too large");
      }
      if (trimmed.dkimNotChecked) onLimit("dkim_signatures");
      if (trimmed.arcNotChecked) onLimit("arc_sets");
      const dns = messageResolver(opts.resolver, controller.signal);
      dns.prefetch([...trimmed.keyNames, senderDomain(ctx), ...fromDmarc(trimmed.head)].filter((n) => n !== ""), "TXT");
      // Loaded on first use: a relay without sender authentication never pays for mailauth.
      const { authenticate } = await import("mailauth");
      const running = authenticate(pacedMessage(trimmed.head, ctx.message(), pacer, controller.signal), {
        ip: ctx.client.ip,
        helo: ctx.client.helo,
        sender: ctx.sender, // "" is the null sender: SPF then checks the HELO identity (RFC 7208 2.4)
        mta: authservId,
        resolver: dns.lookup as DNSResolver,
        disableBimi: true,
        // Strict: RFC results, e.g. a body hash mismatch is dkim=fail (RFC 6376 6.1.3, RFC 8601
        // 2.7.1), rsa-sha1 is dkim=policy (RFC 8301), and A-R carries header.d and arc=.
        strict: true,
      });
      running.catch(() => {}); // after the deadline it ends on its own, its result unused
      const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
      const res = await Promise.race([running, late]);
      if (res === null) {
        onLimit("deadline");
        return unchecked(policy, `not finished within ${timeoutMs / 1000} s`);
      }
      const header = authResultsHeader(res.headers);
      if (!header) opts.onError(new Error("mailauth returned no Authentication-Results header"));
      return { verdict: decide(res, policy), add: [header ? withSkipped(header, trimmed.dkimNotChecked, trimmed.arcNotChecked) : none], drop };
    } catch (err) {
      opts.onError(err instanceof Error ? err : new Error(String(err)));
      // Fail open, but say so: "none" under our id (RFC 8601 2.2); forged ones still go.
      return { verdict: ACCEPT, add: [none], drop };
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  };

  /** mailauth's header, plus what was left out: one aggregate result each (RFC 8601 2.7.1 neutral). */
  function withSkipped(header: string, dkim: number, arcSets: number): string {
    let out = header;
    if (arcSets) out = out.replace(/\barc=none\b/, `arc=none (${arcSets} ARC sets not checked: limit of ${maxArcSets} per message)`);
    if (dkim) out += `;\r\n dkim=neutral (${dkim} more DKIM signatures not checked: limit of ${maxDkimSignatures} per message)`;
    return out;
  }
}

/** The name SPF starts from: the MAIL FROM domain, or the HELO name for the null sender. */
function senderDomain(ctx: ContentContext): string {
  return ctx.sender.includes("@") ? ctx.sender.slice(ctx.sender.lastIndexOf("@") + 1) : ctx.client.helo;
}

/** _dmarc.<domain> of the From address's domain, when one is plainly there (a guess only starts a lookup early). */
function fromDmarc(head: string): string[] {
  const from = /^from:(.*(?:\r\n[ \t].*)*)/im.exec(head)?.[1] ?? "";
  const domain = /@([a-z0-9.-]+)[>\s,]*$/i.exec(from.trim())?.[1];
  return domain ? [`_dmarc.${domain}`] : [];
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
