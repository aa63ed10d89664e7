// DKIM signing of outbound mail (RFC 6376; Ed25519 by RFC 8463): one DKIM-Signature per key
// of the From: domain's active selector, RSA-SHA256 and Ed25519-SHA256 when both exist, put
// on top of the message like any content check's headers.
//
// - Which domain: the one of the single address in the single From: header, exactly (keys of
//   example.org do not sign mail from sub.example.org: DMARC alignment is relaxed by default,
//   but a parent's key on a subdomain's mail is a choice to make per domain, so it is not
//   made here). No From:, several From: headers or several addresses: not signed.
// - Never refuses mail: a failure is reported to onError and the message goes unsigned. An
//   unsigned message still reaches receivers that do not insist on DKIM (and those that do
//   would also refuse a broken signature); losing acknowledged mail would be worse.
// - Oversigning: h= names From once more than the message has it, so a From: field added
//   on the way (the classic DKIM replay trick) breaks the signature (RFC 6376 8.15). mailauth's
//   signer lists only the fields that are present (dkim-signer.js, getSigningHeaderLines), so
//   we take its signature's tags (bh=, t=, a=, d=, s=), write h= ourselves and sign the header
//   hash again: header canonicalization is RFC 6376 3.4.2 "relaxed", a dozen lines below.
//   That costs one more private-key operation per key (about a millisecond for RSA-2048).

import { createHash, sign } from "node:crypto";
import type { Readable } from "node:stream";
import { domainToASCII } from "node:url";
import type { dkimSign as DkimSign } from "mailauth";
import addressparser from "nodemailer/lib/addressparser";
import type { DkimKey, DkimKeys } from "../../dkim/keys.ts";
import { parseHeaders, type HeaderField } from "../../smtp/headers.ts";
import { ACCEPT } from "../../verdict.ts";
import type { ClientInfo, ContentCheck, ContentContext, ContentResult } from "../types.ts";

export interface DkimSigningOptions {
  /** The signing keys of a domain (lower-case A-labels), e.g. loadKeys(config.outbound.dkimDir, domain). */
  readonly keys: (domain: string) => DkimKeys | null;
  /** Whether this message is ours to sign, e.g. from relay_networks or an authenticated user. */
  readonly shouldSign: (ctx: Pick<ContentContext, "client">) => boolean;
  /** False when no domain has keys at all: the From: field is then not even parsed. */
  readonly anyKeys?: () => boolean;
  /** Called when a message that should have been signed could not be; it goes on unsigned. */
  readonly onError: (err: Error) => void;
}

/** Signed when present (RFC 6376 5.4.1). */
const SIGNED = ["From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "In-Reply-To", "References"];
/** Signed once more than present: adding one breaks the signature. */
const OVERSIGNED = new Set(["from"]);
const HEADER = "DKIM-Signature";
const LINE = 76;

export function dkimSigning(opts: DkimSigningOptions): ContentCheck {
  return async (ctx: ContentContext): Promise<ContentResult> => {
    if (!opts.shouldSign(ctx) || opts.anyKeys?.() === false) return { verdict: ACCEPT };
    try {
      if (ctx.head === null) throw new Error("the header section is too large to read; message not DKIM-signed");
      // A line without a colon is not a header field; no verifier would agree on what it is.
      const fields = parseHeaders(ctx.head).fields.filter((f) => f.raw.includes(":"));
      const domain = fromDomain(fields);
      const keys = domain === null ? null : opts.keys(domain);
      if (keys === null || keys.keys.length === 0) return { verdict: ACCEPT };

      // mailauth only pipes the input and listens for "error": any NodeJS.ReadableStream will do.
      // The top-level key fields are required by the typings; the signatures come from signatureData.
      // Loaded on first use, like the authentication check: unsigned relays never load mailauth.
      const { dkimSign } = (await import("mailauth")) as { dkimSign: typeof DkimSign };
      const res = await dkimSign(ctx.message() as Readable, {
        signingDomain: keys.domain,
        selector: keys.keys[0]!.selector,
        privateKey: keys.keys[0]!.pem,
        canonicalization: "relaxed/relaxed",
        headerList: SIGNED,
        signatureData: keys.keys.map((k) => ({ signingDomain: keys.domain, selector: k.selector, privateKey: k.pem, algorithm: k.algorithm })),
        // Refuses what RFC 6376 and RFC 8301 forbid (short RSA keys, bad d= or s= syntax).
        strict: true,
      });
      for (const e of res.errors) opts.onError(new Error(`DKIM signing for ${keys.domain} with selector ${e.selector ?? "?"} failed: ${e.err.message}`));

      const add: string[] = [];
      for (const signature of splitFields(res.signatures)) {
        const tags = parseTags(signature);
        const key = keys.keys.find((k) => k.algorithm === tags.get("a") && k.selector === tags.get("s"));
        if (!key || tags.get("d") !== keys.domain || !tags.has("bh")) throw new Error(`unexpected signature from mailauth: ${signature.slice(0, 120)}`);
        add.push(resign(tags, fields, key));
      }
      return { verdict: ACCEPT, add };
    } catch (err) {
      opts.onError(err instanceof Error ? err : new Error(String(err)));
      return { verdict: ACCEPT };
    }
  };
}

/**
 * Whether dkimSigning(opts) is going to sign a message from this client with this header
 * section: it is ours to sign and its From: domain has keys. Asked before the content checks,
 * so that mail we sign can be put in a form no later hop changes (smtp/signable.ts).
 */
export function signsFor(opts: DkimSigningOptions, client: ClientInfo, head: string | null): boolean {
  if (head === null || !opts.shouldSign({ client }) || opts.anyKeys?.() === false) return false;
  try {
    const domain = fromDomain(parseHeaders(head).fields.filter((f) => f.raw.includes(":")));
    return domain !== null && (opts.keys(domain)?.keys.length ?? 0) > 0;
  } catch {
    return false;
  }
}

/** The domain of the only address of the only From: field, lower-case A-labels; else null. */
function fromDomain(fields: readonly HeaderField[]): string | null {
  const froms = fields.filter((f) => f.name.toLowerCase() === "from");
  if (froms.length !== 1) return null;
  // The header section is kept as latin1; an SMTPUTF8 address is UTF-8 underneath.
  const parsed = addressparser(Buffer.from(froms[0]!.value, "latin1").toString("utf8"), { flatten: true });
  const addresses = parsed.flatMap((a) => (a.address ? [a.address] : []));
  if (addresses.length !== 1 || parsed.length !== 1) return null;
  const address = addresses[0]!;
  const at = address.lastIndexOf("@");
  if (at < 1) return null;
  return domainToASCII(address.slice(at + 1).toLowerCase()) || null;
}

/** mailauth's header block (fields ending CRLF, nothing when no signature was made) as single fields. */
function splitFields(block: string): string[] {
  return block.split(/\r?\n(?![ \t])/).filter((f) => f.trim() !== "");
}

/** The tags of a DKIM-Signature field, in order, values without whitespace (RFC 6376 3.2). */
function parseTags(field: string): Map<string, string> {
  const value = field.slice(field.indexOf(":") + 1);
  const tags = new Map<string, string>();
  for (const spec of value.split(";")) {
    const eq = spec.indexOf("=");
    if (eq < 0) continue;
    tags.set(spec.slice(0, eq).trim(), spec.slice(eq + 1).replace(/\s+/g, ""));
  }
  return tags;
}

/**
 * The DKIM-Signature field with our h= list, signed with `key`: mailauth's other tags in its
 * order, then b= (RFC 6376 3.5, 3.7: the hash covers the signed fields, then this field with
 * an empty b= value, both canonicalized).
 */
function resign(tags: Map<string, string>, fields: readonly HeaderField[], key: DkimKey): string {
  const names = signedNames(fields);
  const out = new Folder(`${HEADER}:`);
  for (const [tag, value] of tags) {
    if (tag === "b") continue;
    if (tag === "h") names.forEach((n, i) => out.add(`${i === 0 ? "h=" : ""}${n}${i < names.length - 1 ? ":" : ";"}`, i === 0 ? " " : ""));
    else out.add(`${tag}=${value};`, " ");
  }
  out.add("b=", " ");
  const data = Buffer.concat([...selectFields(fields, names).map((f) => Buffer.from(`${relaxed(f.raw)}\r\n`, "latin1")), Buffer.from(relaxed(out.text()), "latin1")]);
  // RSA: RSASSA-PKCS1-v1_5 over SHA-256 of the data. Ed25519 (RFC 8463 3): PureEdDSA over the
  // SHA-256 hash of the data.
  const signature = key.kind === "rsa" ? sign("sha256", data, key.privateKey) : sign(null, createHash("sha256").update(data).digest(), key.privateKey);
  out.addBreakable(signature.toString("base64"));
  return out.text();
}

/** h=: each field of SIGNED as often as it is present (an oversigned one once more). */
function signedNames(fields: readonly HeaderField[]): string[] {
  return SIGNED.flatMap((name) => {
    const n = fields.filter((f) => f.name.toLowerCase() === name.toLowerCase()).length + (OVERSIGNED.has(name.toLowerCase()) ? 1 : 0);
    return Array<string>(n).fill(name);
  });
}

/**
 * The fields h= selects, as a verifier selects them (RFC 6376 5.4.2): for each name the last
 * instance not used yet, bottom up; a name with no instance left selects nothing.
 */
function selectFields(fields: readonly HeaderField[], names: readonly string[]): HeaderField[] {
  const used = new Set<HeaderField>();
  const picked: HeaderField[] = [];
  for (const name of names) {
    const f = fields.findLast((x) => !used.has(x) && x.name.toLowerCase() === name.toLowerCase());
    if (f) (used.add(f), picked.push(f));
  }
  return picked;
}

/**
 * RFC 6376 3.4.2 "relaxed" header canonicalization, without the final CRLF: name in lower case,
 * unfolded, whitespace runs as one space, none around the colon or at the end.
 */
function relaxed(field: string): string {
  const unfolded = field.replace(/\r\n/g, "");
  const colon = unfolded.indexOf(":");
  const name = unfolded.slice(0, colon).replace(/[ \t]+$/, "").replace(/[A-Z]+/g, (s) => s.toLowerCase());
  const value = unfolded.slice(colon + 1).replace(/[ \t]+/g, " ").replace(/^ | $/g, "");
  return `${name}:${value}`;
}

/**
 * Folds a header while it is written: pieces go on the current line while it stays within
 * LINE characters, otherwise on a new line that starts with a space (RFC 5322 2.2.3). The
 * text so far never changes when more is added, so what was signed is what is sent.
 */
class Folder {
  private readonly lines: string[];
  constructor(start: string) {
    this.lines = [start];
  }

  /** Adds a piece after `sep` (" " or ""), or at the start of a new line. */
  add(piece: string, sep: " " | ""): void {
    const last = this.lines[this.lines.length - 1]!;
    if (last.length + sep.length + piece.length <= LINE || last.trim() === "") this.lines[this.lines.length - 1] = last + sep + piece;
    else this.lines.push(` ${piece}`);
  }

  /** Adds text that may be broken anywhere (base64, where whitespace is ignored: RFC 6376 3.5). */
  addBreakable(text: string): void {
    let rest = text;
    while (rest.length > 0) {
      const last = this.lines[this.lines.length - 1]!;
      const room = LINE - last.length;
      if (room <= 0) {
        this.lines.push(" ");
        continue;
      }
      this.lines[this.lines.length - 1] = last + rest.slice(0, room);
      rest = rest.slice(room);
    }
  }

  text(): string {
    return this.lines.join("\r\n");
  }
}
