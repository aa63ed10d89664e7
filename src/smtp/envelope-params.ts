// Strict MAIL FROM / RCPT TO arguments, checked on the command's raw bytes before smtp-server
// parses it: only the parameters of extensions we advertise (RFC 5321 4.1.1.11: anything
// else is "555"), each with a valid value ("501"), and a path whose mailbox is well quoted,
// valid UTF-8 and ASCII unless SMTPUTF8 was given ("553 5.6.7", RFC 6531 3.4). smtp-server
// does the rest (address syntax, source routes, DSN storage) once this lets a command pass.

import { mailboxProblem, type MailboxProblem } from "../mail/mailbox-syntax.ts";
import { decodeXtext, isXtext } from "../mail/xtext.ts";

export interface Refusal {
  readonly code: number;
  readonly status: string;
  readonly text: string;
}

export interface MailOptions {
  /** The limit advertised with SIZE. */
  readonly maxSize: number;
  /** AUTH is offered on this listener (submission): MAIL FROM may carry AUTH= (RFC 4954 5). */
  readonly auth: boolean;
  /** DSN is offered: RET and ENVID on MAIL FROM, NOTIFY and ORCPT on RCPT TO (RFC 3461 4). */
  readonly dsn: boolean;
}

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
// esmtp-value: any CHAR but "=", SP and controls (RFC 5321 4.1.2).
const VALUE = /^[\x21-\x3c\x3e-\x7e]+$/;
const NOTIFY = /^(?:NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*)$/i;
// RFC 3461 4.2: ORCPT=addr-type ";" xtext, addr-type an atom; 500 characters at most.
const ORCPT = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+;(.+)$/;

const malformed = (text: string): Refusal => ({ code: 501, status: "5.5.4", text });
const unknown = (key: string): Refusal => ({ code: 555, status: "5.5.4", text: `Unsupported parameter ${key}` });

const MAILBOX_TEXT: Record<MailboxProblem, string> = {
  "invalid-utf8": "Address is not valid UTF-8",
  "non-ascii": "Non-ASCII address needs SMTPUTF8",
  "empty-local-part": "Bad address syntax: empty local part",
  "bad-quoting": "Bad address syntax: unterminated or misplaced quote",
};

/** The refusal for a MAIL FROM command, or null when smtp-server may take it from here. */
export function checkMail(line: Uint8Array, opts: MailOptions): Refusal | null {
  const cmd = splitCommand(line);
  if (!cmd) return null;
  const seen = new Set<string>();
  let smtputf8 = false;
  for (const token of cmd.params) {
    const p = param(token, seen);
    if ("code" in p) return p;
    const { key, value } = p;
    switch (key) {
      case "SIZE":
        // RFC 1870: size-value ::= 1*20DIGIT
        if (value === null || !/^\d{1,20}$/.test(value)) return malformed("Bad message size syntax");
        if (Number(value) > opts.maxSize) return { code: 552, status: "5.3.4", text: `Message size exceeds fixed limit of ${opts.maxSize} bytes` };
        break;
      case "BODY":
        if (value === null || !/^(?:7BIT|8BITMIME)$/i.test(value)) return malformed("Bad BODY parameter: 7BIT or 8BITMIME");
        break;
      case "SMTPUTF8":
        if (value !== null) return malformed("SMTPUTF8 takes no value");
        smtputf8 = true;
        break;
      case "RET":
        if (!opts.dsn) return unknown(key);
        if (value === null || !/^(?:FULL|HDRS)$/i.test(value)) return malformed("Bad RET parameter: FULL or HDRS");
        break;
      case "ENVID":
        // RFC 3461 4.4: xtext, at most 100 characters.
        if (!opts.dsn) return unknown(key);
        if (value === null || value.length > 100 || !printableXtext(value)) return malformed("Bad ENVID parameter syntax");
        break;
      case "AUTH":
        if (!opts.auth) return unknown(key);
        if (value === null || (value !== "<>" && !printableXtext(value))) return malformed("Bad AUTH parameter syntax");
        break;
      default:
        return unknown(key);
    }
  }
  return pathRefusal(cmd.mailbox, smtputf8);
}

/** The refusal for a RCPT TO command; `smtputf8`: the transaction's MAIL FROM carried SMTPUTF8. */
export function checkRcpt(line: Uint8Array, smtputf8: boolean, dsn = true): Refusal | null {
  const cmd = splitCommand(line);
  if (!cmd) return null;
  const seen = new Set<string>();
  for (const token of cmd.params) {
    const p = param(token, seen);
    if ("code" in p) return p;
    const { key, value } = p;
    switch (key) {
      case "NOTIFY":
        if (!dsn) return unknown(key);
        if (value === null || !NOTIFY.test(value)) return malformed("Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE and DELAY separated by commas");
        break;
      case "ORCPT": {
        if (!dsn) return unknown(key);
        const m = value === null ? null : ORCPT.exec(value);
        if (!m || value!.length > 500 || !printableXtext(m[1]!)) return malformed("Bad ORCPT parameter syntax");
        break;
      }
      default:
        return unknown(key);
    }
  }
  return pathRefusal(cmd.mailbox, smtputf8);
}

function pathRefusal(mailbox: Uint8Array | "bad-quoting" | null, smtputf8: boolean): Refusal | null {
  const problem = mailbox === null ? null : mailbox === "bad-quoting" ? mailbox : mailboxProblem(mailbox, smtputf8);
  return problem ? { code: 553, status: "5.6.7", text: MAILBOX_TEXT[problem] } : null;
}

function param(token: string, seen: Set<string>): Refusal | { key: string; value: string | null } {
  const eq = token.indexOf("=");
  const key = (eq === -1 ? token : token.slice(0, eq)).toUpperCase();
  const value = eq === -1 ? null : token.slice(eq + 1);
  if (!KEYWORD.test(key) || (value !== null && !VALUE.test(value))) return malformed("Bad parameter syntax");
  if (seen.has(key)) return malformed(`Duplicate ${key} parameter`);
  seen.add(key);
  return { key, value };
}

/** xtext whose decoded form has no control characters (they would end up in logs and reports). */
function printableXtext(value: string): boolean {
  return isXtext(value) && !/[\x00-\x1f\x7f]/.test(decodeXtext(value));
}

/**
 * Splits "MAIL FROM:<path> params" (or RCPT TO:) at the path, honouring quotes inside it. Null when the
 * line has no angle-bracketed path (smtp-server answers those with 501); "bad-quoting" for a
 * quote that never closes. The mailbox is the path without its source route (RFC 5321 4.1.1.3).
 */
function splitCommand(line: Uint8Array): { mailbox: Uint8Array | "bad-quoting" | null; params: string[] } | null {
  let i = line.indexOf(0x3a) + 1;
  if (i === 0) return null;
  while (line[i] === 0x20) i++;
  if (line[i] !== 0x3c) return null;
  const start = i + 1;
  let quoted = false;
  for (i = start; i < line.length; i++) {
    const c = line[i];
    if (quoted && c === 0x5c) i++;
    else if (c === 0x22) quoted = !quoted;
    else if (c === 0x3e && !quoted) break;
  }
  if (quoted) return { mailbox: "bad-quoting", params: [] };
  if (i >= line.length) return null;
  const rest = Buffer.from(line.subarray(i + 1)).toString("latin1");
  if (rest && !/^[ \t]/.test(rest)) return null;
  let path = line.subarray(start, i);
  if (path[0] === 0x40) {
    const colon = path.indexOf(0x3a);
    if (colon !== -1) path = path.subarray(colon + 1);
  }
  return { mailbox: path.length ? path : null, params: rest.split(/[ \t]+/).filter(Boolean) };
}
