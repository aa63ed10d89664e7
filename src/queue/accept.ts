// Queues a message that is already whole in memory (the HTTP send API, not SMTP's streamed
// DATA): the body goes to a spool file when it is large, then the rows commit.

import type { Config } from "../config/types.ts";
import { routeFor } from "../checks/relay-policy.ts";
import { shapeOf } from "../mime/scan.ts";
import type { Mailbox } from "../smtp/address.ts";
import type { QueueStore } from "./store.ts";

export interface WholeMessage {
  readonly id: string;
  readonly sender: string;
  readonly recipients: readonly Mailbox[];
  readonly head: Uint8Array;
  readonly body: Uint8Array;
  readonly receivedAt: number;
  readonly clientIp: string;
}

export async function enqueueWhole(store: QueueStore, config: Config, m: WholeMessage): Promise<void> {
  let inlineBody: Uint8Array | null = m.body;
  if (m.body.length > config.queue.inlineMaxSize) {
    const file = store.spool.create(m.id);
    try {
      file.write(m.body);
      await file.commit();
    } catch (err) {
      file.discard();
      throw err;
    }
    inlineBody = null;
  }
  try {
    await store.enqueue({
      id: m.id,
      sender: m.sender,
      recipients: m.recipients.map((r) => ({ address: r.address, route: routeFor(config.relay, r, config.outbound.mxDelivery)?.uri ?? "" })),
      head: m.head,
      inlineBody,
      size: m.head.length + m.body.length,
      receivedAt: m.receivedAt,
      clientIp: m.clientIp,
      content: shapeOf(m.head, m.body),
    });
  } catch (err) {
    if (inlineBody === null) store.spool.remove(m.id);
    throw err;
  }
}
