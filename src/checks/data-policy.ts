// DATA stage checks on the received body: the size limits, NUL octets and bare line endings.

import { ACCEPT, reject, type Verdict } from "../verdict.ts";
import type { DataContext } from "./types.ts";

export function messageSize(maxSize: number) {
  return (ctx: DataContext): Verdict =>
    ctx.sizeExceeded ? reject(552, "5.3.4", `Message size exceeds fixed limit of ${maxSize} bytes`, "message too large") : ACCEPT;
}

/** A header section over its limits is refused rather than passed on unexamined. */
export function headerSize(maxField: number, maxSection: number) {
  return (ctx: DataContext): Verdict =>
    ctx.headerTooLarge
      ? reject(552, "5.3.4", `Message header exceeds fixed limit (${maxField} bytes per field, ${maxSection} bytes in all)`, "header too large")
      : ACCEPT;
}

/** NUL octets with smtp.nul_bytes: reject (Postfix's message_reject_characters). */
export function nulOctets(ctx: DataContext): Verdict {
  return ctx.nulOctets ? reject(550, "5.6.0", "Message contains NUL characters, which SMTP does not allow", "nul octets") : ACCEPT;
}

/** Too many Received: headers means the message is going round in circles (RFC 5321 6.3). */
export function hopCount(maxHops: number) {
  return (ctx: DataContext): Verdict =>
    ctx.hops > maxHops ? reject(554, "5.4.6", `Too many hops (${ctx.hops} Received: headers); is there a mail loop?`, "mail loop") : ACCEPT;
}

/**
 * A bare LF or CR in the content is refused, like Postfix's smtpd_forbid_bare_newline. A next
 * hop that accepts "<LF>.<LF>" or "<LF>.<CR><LF>" as the end of data would otherwise read the
 * rest of the message as new SMTP commands (SMTP smuggling), with our IP as the sender.
 */
export function bareNewline(ctx: DataContext): Verdict {
  return ctx.bareNewline
    ? reject(550, "5.5.2", "Message contains bare LF or CR; lines must end with CRLF (RFC 5321 section 2.3.8)", "bare newline")
    : ACCEPT;
}
