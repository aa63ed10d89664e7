// Delivery status notifications (RFC 3464): the bounce a sender gets when recipients fail
// permanently. Sent from the null sender so it can never bounce back (RFC 5321 4.5.5),
// carrying the original headers only, not the body.

import { rfc5322Date } from "../smtp/received.ts";
import { splitMessage } from "./message.ts";
import type { NewMessage } from "./store.ts";

export interface FailedRecipient {
  readonly address: string;
  readonly diagnostic: string;
  /** The reply came from the next hop (smtp;...) rather than from us. */
  readonly remote: boolean;
}

export interface BounceInput {
  readonly reportingHost: string;
  readonly originalId: string;
  readonly originalSender: string;
  readonly originalReceivedAt: number;
  readonly originalHeaders: string;
  readonly failed: readonly FailedRecipient[];
  readonly route: string;
  readonly now: number;
  /** The bounce's own queue id. */
  readonly id: string;
}

// An enhanced status code (RFC 3463) where a reply carries one: first, or right after the reply
// code. Elsewhere in the text "10.2.3.4" is an address, not status 2.3.4.
const STATUS_IN_TEXT = /(?:^|\b\d{3}[ -])([245])\.(\d{1,3})\.(\d{1,3})\b/;

export function buildBounce(b: BounceInput): NewMessage {
  const id = b.id;
  const boundary = `=_mailraven_${id}`;
  const date = rfc5322Date(new Date(b.now));
  const lines = (s: string) => s.replace(/\r?\n/g, "\r\n");
  const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ").slice(0, 900);
  const human = b.failed.map((f) => `  <${f.address}>: ${oneLine(f.diagnostic)}`).join("\r\n");
  const perRecipient = b.failed
    .map((f) => {
      const status = STATUS_IN_TEXT.exec(f.diagnostic);
      return [
        `Final-Recipient: rfc822; ${f.address}`,
        "Action: failed",
        `Status: ${status ? `5.${status[2]}.${status[3]}` : "5.0.0"}`,
        f.remote ? `Diagnostic-Code: smtp; ${oneLine(f.diagnostic)}` : `Diagnostic-Code: x-mailraven; ${oneLine(f.diagnostic)}`,
        `Last-Attempt-Date: ${date}`,
      ].join("\r\n");
    })
    .join("\r\n\r\n");

  const text =
    `From: Mail Delivery System <MAILER-DAEMON@${b.reportingHost}>\r\n` +
    `To: <${b.originalSender}>\r\n` +
    `Subject: Undelivered Mail Returned to Sender\r\n` +
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
    `Your message (queue id ${b.originalId}) could not be delivered to one or more recipients.\r\n` +
    `It has been returned with the headers of the original message attached.\r\n\r\n` +
    `${human}\r\n\r\n` +
    `--${boundary}\r\n` +
    `Content-Type: message/delivery-status\r\n\r\n` +
    `Reporting-MTA: dns; ${b.reportingHost}\r\n` +
    `X-Mailraven-Queue-ID: ${b.originalId}\r\n` +
    `Arrival-Date: ${rfc5322Date(new Date(b.originalReceivedAt))}\r\n\r\n` +
    `${perRecipient}\r\n\r\n` +
    `--${boundary}\r\n` +
    `Content-Type: text/rfc822-headers\r\n\r\n` +
    `${lines(b.originalHeaders).replace(/(\r\n)*$/, "")}\r\n\r\n` +
    `--${boundary}--\r\n`;
  const bytes = new TextEncoder().encode(text);
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
  };
}
