// Builds the message for POST /api/v1/messages: a JSON request made into RFC 5322 with
// nodemailer's MailComposer, or a raw message taken as is. Validates addresses, sizes and
// headers so nothing a caller sends can inject header lines or hide recipients.

import MailComposer from "nodemailer/lib/mail-composer";
import addressparser from "nodemailer/lib/addressparser";
import { originators } from "./originators.ts";
import { RequestError } from "./request-error.ts";

export { RequestError };

export interface Composed {
  readonly envelope: { readonly from: string; readonly to: readonly string[] };
  /** Every address in From:, Sender:, Resent-From: and Resent-Sender:, for the per-key domain check. */
  readonly fromHeader: readonly string[];
  readonly raw: Buffer;
}

const ADDRESS = /^[^\s@<>()[\]\\,;:"]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$/i;
const HEADER_NAME = /^[!-9;-~]+$/;
const RESERVED_HEADERS = new Set(["from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding", "received"]);

function addressList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((a, i) => {
    if (typeof a !== "string") throw new RequestError(400, "bad_address", `${field}[${i}] must be a string`);
    const parsed = addressparser(a);
    const address = parsed.length === 1 && "address" in parsed[0]! ? parsed[0].address : undefined;
    if (!address || !ADDRESS.test(address) || /[\r\n]/.test(a)) throw new RequestError(400, "bad_address", `${field}[${i}] is not an e-mail address: ${JSON.stringify(a).slice(0, 80)}`);
    return a;
  });
}

const bare = (a: string): string => {
  const p = addressparser(a)[0];
  return (p && "address" in p && p.address ? p.address : a).toLowerCase();
};

function text(v: unknown, field: string, max: number): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new RequestError(400, "bad_field", `${field} must be a string`);
  if (v.length > max) throw new RequestError(413, "too_large", `${field} is longer than ${max} characters`);
  return v;
}

export async function composeJson(body: Record<string, unknown>, maxSize: number): Promise<Composed> {
  const allowed = ["from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments", "headers"];
  const unknown = Object.keys(body).find((k) => !allowed.includes(k));
  if (unknown) throw new RequestError(400, "unknown_field", `unknown field "${unknown}"; known fields: ${allowed.join(", ")}`);
  const from = addressList(body.from, "from");
  if (from.length !== 1) throw new RequestError(400, "bad_address", "from must be exactly one address");
  const to = addressList(body.to, "to");
  const cc = addressList(body.cc, "cc");
  const bcc = addressList(body.bcc, "bcc");
  if (to.length + cc.length + bcc.length === 0) throw new RequestError(400, "no_recipients", "give at least one recipient in to, cc or bcc");
  const subject = text(body.subject, "subject", 998);
  if (subject !== undefined && /[\r\n]/.test(subject)) throw new RequestError(400, "bad_field", "subject must be one line");
  const headers: Record<string, string> = {};
  if (body.headers !== undefined) {
    if (!body.headers || typeof body.headers !== "object" || Array.isArray(body.headers)) throw new RequestError(400, "bad_field", "headers must be an object of name: value");
    for (const [name, value] of Object.entries(body.headers)) {
      if (!HEADER_NAME.test(name) || RESERVED_HEADERS.has(name.toLowerCase())) throw new RequestError(400, "bad_header", `header "${name.slice(0, 60)}" is not allowed here`);
      if (typeof value !== "string" || /[\r\n\0]/.test(value) || value.length > 998) throw new RequestError(400, "bad_header", `header ${name} must be one line of text`);
      headers[name] = value;
    }
  }
  const attachments = (Array.isArray(body.attachments) ? body.attachments : body.attachments === undefined ? [] : null)?.map((a: unknown, i: number) => {
    const att = a as Record<string, unknown>;
    const filename = text(att?.filename, `attachments[${i}].filename`, 255);
    const content = text(att?.content, `attachments[${i}].content`, maxSize * 2);
    if (!filename || content === undefined || /[\r\n"\\/]/.test(filename)) throw new RequestError(400, "bad_attachment", `attachments[${i}] needs a filename (no path, quotes or line breaks) and base64 content`);
    if (!/^[A-Za-z0-9+/=\s]*$/.test(content)) throw new RequestError(400, "bad_attachment", `attachments[${i}].content must be base64`);
    const contentType = text(att.content_type, `attachments[${i}].content_type`, 127);
    if (contentType !== undefined && !/^[\w.+-]+\/[\w.+-]+$/.test(contentType)) throw new RequestError(400, "bad_attachment", `attachments[${i}].content_type is not a media type`);
    return { filename, content: Buffer.from(content, "base64"), ...(contentType ? { contentType } : {}) };
  });
  if (attachments === null || attachments === undefined) throw new RequestError(400, "bad_attachment", "attachments must be a list");
  const replyTo = addressList(body.reply_to, "reply_to");
  const mail = new MailComposer({
    from: from[0],
    to,
    cc,
    bcc,
    ...(replyTo.length ? { replyTo } : {}),
    subject: subject ?? "",
    text: text(body.text, "text", maxSize),
    html: text(body.html, "html", maxSize),
    attachments,
    headers,
  });
  // MailComposer leaves Bcc out of the message it builds; the envelope keeps every recipient.
  const raw = await new Promise<Buffer>((resolve, reject) => mail.compile().build((err, msg) => (err ? reject(err) : resolve(msg))));
  if (raw.length > maxSize) throw new RequestError(413, "too_large", `the message is ${raw.length} bytes; the limit is ${maxSize}`);
  return { envelope: { from: bare(from[0]!), to: [...to, ...cc, ...bcc].map(bare) }, fromHeader: [bare(from[0]!)], raw };
}

/** A raw RFC 5322 message with its envelope given separately (the headers are not trusted for it). */
export function composeRaw(raw: Buffer, envelope: { from?: unknown; to?: unknown }, maxSize: number): Composed {
  if (raw.length > maxSize) throw new RequestError(413, "too_large", `the message is ${raw.length} bytes; the limit is ${maxSize}`);
  const text = raw.toString("latin1");
  if (/(?<!\r)\n|\r(?!\n)/.test(text)) throw new RequestError(400, "bare_newline", "lines must end with CRLF");
  const from = addressList(envelope.from, "envelope.from");
  const to = addressList(envelope.to, "envelope.to");
  if (from.length !== 1 || to.length === 0) throw new RequestError(400, "bad_envelope", "give envelope.from (one address) and envelope.to (at least one)");
  const end = text.indexOf("\r\n\r\n");
  const { all } = originators(end === -1 ? text : text.slice(0, end + 2));
  return { envelope: { from: bare(from[0]!), to: to.map(bare) }, fromHeader: all, raw };
}
