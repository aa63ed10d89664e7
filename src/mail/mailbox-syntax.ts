// The syntax of an envelope path's mailbox (RFC 5321 4.1.2, RFC 6531 3.3), checked on the
// bytes the client sent, before anything decodes them: smtp-server reads the command as
// UTF-8 (an invalid sequence becomes U+FFFD and passes) and splits the local part at "@"
// without looking at quotes. The rest of the syntax (dots, domain labels) is its job.
// UTF-8 validity: RFC 3629 section 3 forbids overlong forms, the surrogate range and code
// points above U+10FFFF, and a sequence cut short is no character at all; node:buffer's
// isUtf8 (native in Bun) refuses exactly those.

import { isAscii, isUtf8 } from "node:buffer";

export type MailboxProblem =
  /** Not UTF-8 at all: overlong, surrogate, above U+10FFFF or truncated. */
  | "invalid-utf8"
  /** UTF-8 in a transaction whose MAIL FROM did not carry SMTPUTF8 (RFC 6531 3.4). */
  | "non-ascii"
  /** "<@domain>": nothing before the "@". */
  | "empty-local-part"
  /** A quote that is not closed, or a quoted string that is not the whole local part. */
  | "bad-quoting";

const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const AT = 0x40;

/**
 * Checks a mailbox (the part of the path inside "<" ">" after any source route); null when
 * fine. A mailbox without "@" (RCPT TO:<postmaster>) has only its bytes checked.
 */
export function mailboxProblem(mailbox: Uint8Array, smtputf8: boolean): MailboxProblem | null {
  if (!isUtf8(mailbox)) return "invalid-utf8";
  if (!smtputf8 && !isAscii(mailbox)) return "non-ascii";
  if (mailbox[0] === DQUOTE) {
    const end = quotedStringEnd(mailbox);
    // Quoted-string = DQUOTE *QcontentSMTP DQUOTE, and it is the whole local part.
    return end === -1 || (end < mailbox.length && mailbox[end] !== AT) ? "bad-quoting" : null;
  }
  const at = mailbox.lastIndexOf(AT);
  if (mailbox.indexOf(DQUOTE) !== -1 && mailbox.indexOf(DQUOTE) < (at === -1 ? mailbox.length : at)) return "bad-quoting";
  if (at === 0) return "empty-local-part";
  return null;
}

/** Index just past the closing quote of the quoted string at 0, or -1 if it never closes. */
function quotedStringEnd(b: Uint8Array): number {
  for (let i = 1; i < b.length; i++) {
    if (b[i] === BACKSLASH) i++;
    else if (b[i] === DQUOTE) return i + 1;
  }
  return -1;
}
