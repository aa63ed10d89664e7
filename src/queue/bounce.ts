// Turns failed recipients of a queued message into the bounce (DSN) for its sender: reads the
// original headers, finds the route back to the sender, and builds the report. No bounce for
// the null sender (RFC 5321 4.5.5), and none without a route to the sender's domain.

import { open } from "node:fs/promises";
import { routeFor } from "../checks/relay-policy.ts";
import type { Config } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { parseMailbox } from "../smtp/address.ts";
import { buildBounce, type FailedRecipient } from "./dsn.ts";
import type { NewMessage, QueueStore } from "./store.ts";

const MAX_HEADER_BYTES = 64 * 1024;

export interface BounceOf {
  readonly messageId: string;
  readonly sender: string;
  readonly receivedAt: number;
  readonly failed: readonly FailedRecipient[];
}

export async function bounceFor(store: QueueStore, config: Config, log: Logger, b: BounceOf, now: number): Promise<NewMessage | null> {
  if (b.failed.length === 0 || b.sender === "") return null;
  const senderBox = parseMailbox(b.sender);
  const route = senderBox && routeFor(config.relay, senderBox, config.outbound.mxDelivery);
  if (!route) {
    log.error("bounce not sent: no route to the sender's domain", { queue_id: b.messageId, from: b.sender });
    return null;
  }
  return buildBounce({
    reportingHost: config.hostname,
    originalId: b.messageId,
    originalSender: b.sender,
    originalReceivedAt: b.receivedAt,
    originalHeaders: await headersOf(store, b.messageId),
    failed: b.failed,
    route: route.uri,
    now,
    id: store.newId(now),
  });
}

async function headersOf(store: QueueStore, messageId: string): Promise<string> {
  const stored = store.body(messageId);
  let bytes: Uint8Array = stored.head;
  // A message queued by schema version 0 has everything in its body.
  if (bytes.length === 0 && stored.inline) bytes = stored.inline.subarray(0, MAX_HEADER_BYTES);
  else if (bytes.length === 0 && stored.spoolPath) {
    const fh = await open(stored.spoolPath, "r");
    try {
      const buf = new Uint8Array(MAX_HEADER_BYTES);
      const { bytesRead } = await fh.read(buf, 0, MAX_HEADER_BYTES, 0);
      bytes = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
  const text = new TextDecoder("latin1").decode(bytes.subarray(0, MAX_HEADER_BYTES));
  const end = text.indexOf("\r\n\r\n");
  return end === -1 ? text : text.slice(0, end + 2);
}
