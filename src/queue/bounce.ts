// Turns recipients of a queued message into a report (DSN) for its sender: a bounce for
// failed ones, a delay warning, or a success report. Reads the original headers (or, for a
// bounce asked for with RET=FULL, the whole message when it is small), finds the route back
// to the sender, and builds the report. No report for the null sender (RFC 5321 4.5.5), and
// none without a route to the sender's domain.

import { open } from "node:fs/promises";
import { routeFor } from "../checks/relay-policy.ts";
import type { Config } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { parseMailbox } from "../smtp/address.ts";
import { buildReport, type FailedRecipient, type ReportAction, type ReportedRecipient } from "./dsn.ts";
import type { NewMessage, QueueStore, StoredBody } from "./store.ts";

const MAX_HEADER_BYTES = 64 * 1024;
/** Like Postfix's bounce_size_limit: a larger original is returned as its headers only. */
export const RETURN_FULL_LIMIT = 50_000;

export interface BounceOf {
  readonly messageId: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly failed: readonly FailedRecipient[];
}

export interface ReportOf {
  readonly messageId: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly action: ReportAction;
  readonly recipients: readonly ReportedRecipient[];
  readonly willRetryUntil?: number | null;
}

export function bounceFor(store: QueueStore, config: Config, log: Logger, b: BounceOf, now: number): Promise<NewMessage | null> {
  return reportFor(store, config, log, { messageId: b.messageId, sender: b.sender, receivedAt: b.receivedAt, action: "failed", recipients: b.failed }, now);
}

export async function reportFor(store: QueueStore, config: Config, log: Logger, r: ReportOf, now: number): Promise<NewMessage | null> {
  if (r.recipients.length === 0 || r.sender === "") return null;
  const senderBox = parseMailbox(r.sender);
  const route = senderBox && routeFor(config.relay, senderBox, config.outbound.mxDelivery);
  if (!route) {
    log.error("report not sent: no route to the sender's domain", { queue_id: r.messageId, from: r.sender, action: r.action });
    return null;
  }
  const stored = store.body(r.messageId);
  const full = r.action === "failed" && stored.dsn?.ret === "FULL" && stored.size <= RETURN_FULL_LIMIT;
  return buildReport({
    reportingHost: config.hostname,
    originalId: r.messageId,
    originalSender: r.sender,
    originalReceivedAt: r.receivedAt,
    originalHeaders: await headersOf(stored),
    originalMessage: full ? await wholeOf(stored) : null,
    envid: stored.dsn?.envid ?? null,
    action: r.action,
    recipients: r.recipients,
    willRetryUntil: r.willRetryUntil ?? null,
    route: route.uri,
    now,
    id: store.newId(now),
  });
}

async function headersOf(stored: StoredBody): Promise<string> {
  let bytes: Uint8Array = stored.head;
  // A message queued by schema version 0 has everything in its body.
  if (bytes.length === 0 && stored.inline) bytes = stored.inline.subarray(0, MAX_HEADER_BYTES);
  else if (bytes.length === 0 && stored.spoolPath) bytes = await readStart(stored.spoolPath, MAX_HEADER_BYTES);
  // Buffer's latin1 maps each octet to one char and back (TextDecoder's "latin1" is windows-1252).
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, MAX_HEADER_BYTES)).toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  return end === -1 ? text : text.slice(0, end + 2);
}

async function wholeOf(stored: StoredBody): Promise<Uint8Array> {
  const body = stored.inline ?? (stored.spoolPath ? await readStart(stored.spoolPath, RETURN_FULL_LIMIT) : new Uint8Array(0));
  return Buffer.concat([stored.head, body]);
}

async function readStart(path: string, max: number): Promise<Uint8Array> {
  const fh = await open(path, "r");
  try {
    const buf = new Uint8Array(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
