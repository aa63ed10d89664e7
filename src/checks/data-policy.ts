// DATA stage checks on the received body: the size limit and bare line endings.

import { ACCEPT, reject, type Verdict } from "../verdict.ts";
import type { DataContext } from "./types.ts";

export function messageSize(maxSize: number) {
  return (ctx: DataContext): Verdict =>
    ctx.sizeExceeded ? reject(552, "5.3.4", `Message size exceeds fixed limit of ${maxSize} bytes`, "message too large") : ACCEPT;
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
