// Delivery status notifications (RFC 3464, in a multipart/report of RFC 6522): the report a
// sender gets when recipients fail permanently (a bounce), are still being retried after
// queue.delay_warning (a delay warning), or, when asked with NOTIFY=SUCCESS (RFC 3461), were
// delivered (LMTP) or relayed to a next hop that does not pass notifications on. Sent from
// the null sender so it can never bounce back (RFC 5321 4.5.5). A failure report carries the
// whole original message when the client asked for RET=FULL and it is small, else (and
// every other report) its header section only.

import { encodeXText } from "nodemailer/lib/shared";
import { shapeOf } from "../mime/scan.ts";
import { rfc5322Date } from "../smtp/received.ts";
import { splitMessage } from "./message.ts";
import type { NewMessage, Notify } from "./store.ts";

/** RFC 3464 2.3.3 actions we report. */
export type ReportAction = "failed" | "delayed" | "delivered" | "relayed";

export interface ReportedRecipient {
  readonly address: string;
  /** The reply or our own explanation. */
  readonly diagnostic: string;
  /** The reply came from the next hop (smtp;...) rather than from us. */
  readonly remote: boolean;
  /** RFC 3461 ORCPT as the client gave it ("rfc822;bob@example.org"), for Original-Recipient. */
  readonly orcpt?: string | null;
  /** The next hop that answered, for Remote-MTA (success reports). */
  readonly remoteMta?: string | null;
}

/** A bounce's recipients (kept under its old name). */
export type FailedRecipient = ReportedRecipient;

export interface BounceInput {
  readonly reportingHost: string;
  readonly originalId: string;
  readonly originalSender: string;
  readonly originalReceivedAt: number;
  readonly originalHeaders: string;
  readonly failed: readonly FailedRecipient[];
  readonly route: string;
  readonly now: number;
  /** The report's own queue id. */
  readonly id: string;
  /** RFC 3461 ENVID of the original transaction, for Original-Envelope-Id. */
  readonly envid?: string | null;
  /** The whole original message, returned instead of its headers (RET=FULL, small enough). */
  readonly originalMessage?: Uint8Array | null;
}

export interface ReportInput extends Omit<BounceInput, "failed"> {
  readonly action: ReportAction;
  readonly recipients: readonly ReportedRecipient[];
  /** Delay warnings: when the last retry is due (Will-Retry-Until). */
  readonly willRetryUntil?: number | null;
}

/** Whether a recipient's NOTIFY asks for a report of this kind (RFC 3461 4.1; none given: failures and delays). */
export function notifies(notify: Notify, action: ReportAction): boolean {
  const want = action === "failed" ? "FAILURE" : action === "delayed" ? "DELAY" : "SUCCESS";
  return notify === null ? want !== "SUCCESS" : notify.includes(want);
}

// An enhanced status code (RFC 3463) where a reply carries one: first, or right after the reply
// code. Elsewhere in the text "10.2.3.4" is an address, not status 2.3.4.
const STATUS_IN_TEXT = /(?:^|\b\d{3}[ -])([245])\.(\d{1,3})\.(\d{1,3})\b/;

const TEXT: Record<ReportAction, { subject: string; status: string; says: string }> = {
  failed: { subject: "Undelivered Mail Returned to Sender", status: "5", says: "could not be delivered to one or more recipients" },
  delayed: { subject: "Delayed Mail (still being retried)", status: "4", says: "has not yet been delivered to one or more recipients" },
  delivered: { subject: "Successful Mail Delivery Report", status: "2", says: "was delivered to the mailbox of these recipients" },
  relayed: { subject: "Successful Mail Delivery Report", status: "2", says: "was relayed to these recipients' next hop, which will not send delivery notifications" },
};

const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ").slice(0, 900);
/** RFC 3464 fields are US-ASCII: a client's value that is not stays xtext-encoded (RFC 3461 4). */
const ascii = (s: string) => oneLine(/^[\x20-\x7e]*$/.test(s) ? s : encodeXText(s));

function perRecipient(b: ReportInput, f: ReportedRecipient, date: string): string {
  const status = STATUS_IN_TEXT.exec(f.diagnostic);
  const klass = TEXT[b.action].status;
  const fields: string[] = [];
  if (f.orcpt) {
    const semi = f.orcpt.indexOf(";");
    fields.push(`Original-Recipient: ${ascii(f.orcpt.slice(0, semi))}; ${ascii(f.orcpt.slice(semi + 1))}`);
  }
  fields.push(`Final-Recipient: rfc822; ${f.address}`, `Action: ${b.action}`, `Status: ${status ? `${klass}.${status[2]}.${status[3]}` : `${klass}.0.0`}`);
  if (f.remoteMta) fields.push(`Remote-MTA: dns; ${oneLine(f.remoteMta)}`);
  fields.push(f.remote ? `Diagnostic-Code: smtp; ${oneLine(f.diagnostic)}` : `Diagnostic-Code: x-mailraven; ${oneLine(f.diagnostic)}`);
  fields.push(`Last-Attempt-Date: ${date}`);
  if (b.action === "delayed" && b.willRetryUntil) fields.push(`Will-Retry-Until: ${rfc5322Date(new Date(b.willRetryUntil))}`);
  return fields.join("\r\n");
}

export function buildReport(b: ReportInput): NewMessage {
  const id = b.id;
  const boundary = `=_mailraven_${id}`;
  const date = rfc5322Date(new Date(b.now));
  const lines = (s: string) => s.replace(/\r?\n/g, "\r\n");
  const text = TEXT[b.action];
  const human = b.recipients.map((f) => `  <${f.address}>: ${oneLine(f.diagnostic)}`).join("\r\n");
  const retry = b.action === "delayed" && b.willRetryUntil ? `It will be retried until ${rfc5322Date(new Date(b.willRetryUntil))}; you do not need to send it again.\r\n` : "";
  const returned = b.action === "failed" && b.originalMessage ? "the original message" : "the headers of the original message";
  const perMessage = [
    ...(b.envid ? [`Original-Envelope-Id: ${ascii(b.envid)}`] : []),
    `Reporting-MTA: dns; ${b.reportingHost}`,
    `Arrival-Date: ${rfc5322Date(new Date(b.originalReceivedAt))}`,
    `X-Mailraven-Queue-ID: ${b.originalId}`,
  ].join("\r\n");
  // The original's octets go in as they were stored (UTF-8 header fields included); our text is UTF-8.
  const original =
    b.action === "failed" && b.originalMessage
      ? Buffer.concat([Buffer.from("Content-Type: message/rfc822\r\n\r\n"), trimEnd(b.originalMessage), Buffer.from("\r\n\r\n")])
      : Buffer.concat([Buffer.from("Content-Type: text/rfc822-headers\r\n\r\n"), trimEnd(Buffer.from(lines(b.originalHeaders), "latin1")), Buffer.from("\r\n\r\n")]);

  const before =
    `From: Mail Delivery System <MAILER-DAEMON@${b.reportingHost}>\r\n` +
    `To: <${b.originalSender}>\r\n` +
    `Subject: ${text.subject}\r\n` +
    `Date: ${date}\r\n` +
    `Message-ID: <${id}@${b.reportingHost}>\r\n` +
    `Auto-Submitted: auto-replied\r\n` +
    `MIME-Version: 1.0\r\n` +
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"\r\n` +
    `\r\n` +
    `This is a MIME-encapsulated message.\r\n\r\n` +
    `--${boundary}\r\n` +
    `Content-Type: text/plain; charset=us-ascii\r\n\r\n` +
    `This is the mail system at host ${b.reportingHost}.\r\n\r\n` +
    `Your message (queue id ${b.originalId}) ${text.says}.\r\n` +
    retry +
    `Attached are ${returned}.\r\n\r\n` +
    `${human}\r\n\r\n` +
    `--${boundary}\r\n` +
    `Content-Type: message/delivery-status\r\n\r\n` +
    `${perMessage}\r\n\r\n` +
    `${b.recipients.map((f) => perRecipient(b, f, date)).join("\r\n\r\n")}\r\n\r\n` +
    `--${boundary}\r\n`;
  const bytes = Buffer.concat([Buffer.from(before), original, Buffer.from(`--${boundary}--\r\n`)]);
  const { head, body } = splitMessage(bytes);
  return {
    id,
    sender: "",
    recipients: [{ address: b.originalSender, route: b.route }],
    head,
    inlineBody: body,
    size: bytes.length,
    receivedAt: b.now,
    clientIp: "127.0.0.1",
    content: shapeOf(bytes),
  };
}

/** Without the line breaks at its end. */
function trimEnd(bytes: Uint8Array): Buffer {
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
  return Buffer.from(bytes.buffer, bytes.byteOffset, end);
}

/** The failure report (bounce). */
export function buildBounce(b: BounceInput): NewMessage {
  const { failed, ...rest } = b;
  return buildReport({ ...rest, action: "failed", recipients: failed });
}
