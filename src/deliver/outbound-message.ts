// The message as one next hop can take it, decided per session from what the hop offered
// and what the queue knows about the message (envelope parameters, the accept-time scan):
// - SMTPUTF8 needed (a non-ASCII envelope address, or UTF-8 header fields of a message sent
//   with SMTPUTF8) and not offered: refused with 5.6.7 (RFC 6531 3.4), like Postfix;
// - 8-bit content and no 8BITMIME: every 8-bit MIME part re-encoded (mime/seven-bit.ts),
//   else BODY=8BITMIME when the content is 8-bit or the client declared it (RFC 6152);
// - lines over 998 octets: wrapped (mime/wrap-lines.ts);
// - DSN offered: RET/ENVID and NOTIFY/ORCPT passed on as the client gave them (RFC 3461 5.2).
// A 7-bit message with short lines goes out as it was stored, with no extra work.

import { isAscii } from "node:buffer";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { encodeXText } from "nodemailer/lib/shared";
import { hopSafe } from "../mime/hop-safe.ts";
import { isPermanentConversionFailure } from "../mime/seven-bit.ts";
import type { DueRecipient, StoredBody } from "../queue/store.ts";
import type { EsmtpParams, HopExtensions } from "./esmtp-params.ts";
import type { RecipientResult } from "./result.ts";
import type { HopConnection } from "./smtp-client.ts";

export interface Outgoing {
  readonly body: Uint8Array | Readable;
  readonly params: EsmtpParams;
  /** Turns results of a send whose conversion failed into the failure's own result. */
  settle(results: RecipientResult[]): RecipientResult[];
}

/** The stored message as sent on: header section, then the body from the row or the spool. */
export function storedStream(stored: StoredBody): Uint8Array | Readable {
  if (stored.inline) return Buffer.concat([stored.head, stored.inline]);
  const path = stored.spoolPath!;
  return Readable.from(
    (async function* () {
      yield Buffer.from(stored.head);
      yield* createReadStream(path);
    })(),
  );
}

const nonAscii = (s: string) => /[^\x00-\x7f]/.test(s);

/** Why this hop cannot take the message (a permanent failure), or null. */
export function refusal(stored: StoredBody, sender: string, recipients: readonly DueRecipient[], hop: HopExtensions, hopLabel: string): string | null {
  if (hop.smtputf8) return null;
  const needed = nonAscii(sender) || recipients.some((r) => nonAscii(r.address)) || (stored.smtputf8 && !isAscii(stored.head));
  return needed ? `5.6.7 SMTPUTF8 is required, but was not offered by host ${hopLabel}` : null;
}

export async function outgoing(stored: StoredBody, recipients: readonly DueRecipient[], hop: HopExtensions): Promise<Outgoing> {
  // Not known (queued by an older version): assume the worst, the conversions are lossless.
  const eightBit = stored.content?.eightBit ?? true;
  const longLines = stored.content?.longLines ?? true;
  const mail: string[] = [];
  if (hop.eightBitMime && (eightBit || stored.bodyType === "8BITMIME")) mail.push("BODY=8BITMIME");
  if (hop.smtputf8 && stored.smtputf8) mail.push("SMTPUTF8");
  const rcpt = new Map<string, string[]>();
  if (hop.dsn) {
    if (stored.dsn?.ret) mail.push(`RET=${stored.dsn.ret}`);
    if (stored.dsn?.envid) mail.push(`ENVID=${encodeXText(stored.dsn.envid)}`);
    for (const r of recipients) {
      const p = [...(r.notify ? [`NOTIFY=${r.notify.join(",")}`] : []), ...(r.orcpt ? [`ORCPT=${encodeXText(r.orcpt)}`] : [])];
      if (p.length) rcpt.set(r.address, p);
    }
  }
  const params = { mail, rcpt };
  const { body, failure } = await hopSafe(storedStream(stored), { eightBit: eightBit && !hop.eightBitMime, longLines });
  return { body, params, settle: (results) => settle(results, failure()) };
}

function settle(results: RecipientResult[], failure: Error | null): RecipientResult[] {
  if (!failure || results.every((r) => r.kind === "ok")) return results;
  const result: RecipientResult = isPermanentConversionFailure(failure)
    ? { kind: "permanent", response: `5.6.5 Conversion to 7bit for a next hop without 8BITMIME failed: ${failure.message}` }
    : { kind: "temporary", response: `4.3.0 Reading the queued message failed: ${failure.message}` };
  return results.map(() => result);
}

/** Sends one queued message to the recipients over an open session, as the hop can take it. */
export async function sendStored(conn: HopConnection, stored: StoredBody, recipients: readonly DueRecipient[], routeLabel: string): Promise<RecipientResult[]> {
  const sender = recipients[0]!.sender;
  const refused = refusal(stored, sender, recipients, conn.extensions, conn.peer.mx ?? routeLabel);
  if (refused) return recipients.map(() => ({ kind: "permanent", response: refused }));
  const out = await outgoing(stored, recipients, conn.extensions);
  // SIZE declares the stored size (as Postfix does), also when a conversion makes it grow.
  return out.settle(await conn.send({ from: sender, to: recipients.map((r) => r.address), size: stored.size }, out.body, out.params));
}
