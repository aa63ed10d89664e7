// The queue as the delivery thread sees it: reads on a connection of its own, queue ids from a
// generator of its own (ids carry 35 random bits, so two generators do not collide), and the
// one write, record(), sent to the SMTP thread's group commit and answered from there.

import type { NewMessage, RecipientOutcome } from "../queue/store.ts";
import { QueueIdGenerator } from "../queue/id.ts";
import type { QueueReader } from "../queue/reader.ts";
import type { Outbox, ToHost } from "./thread-protocol.ts";
import type { DeliveryQueue } from "./worker.ts";

export class ThreadQueue implements DeliveryQueue {
  private readonly ids = new QueueIdGenerator();
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private seq = 0;

  constructor(
    private readonly reader: QueueReader,
    private readonly outbox: Outbox<ToHost>,
  ) {}

  dueAfter(afterMessageId: string, now: number, limit: number) {
    return this.reader.dueAfter(afterMessageId, now, limit);
  }

  due(now: number, limit: number) {
    return this.reader.due(now, limit);
  }

  nextDueAt() {
    return this.reader.nextDueAt();
  }

  body(messageId: string) {
    return this.reader.body(messageId);
  }

  newId(now: number): string {
    return this.ids.next(now);
  }

  /** Resolves once the SMTP thread has committed the outcomes (and fsynced the WAL). */
  record(outcomes: readonly RecipientOutcome[], bounces: readonly NewMessage[], messageIds: readonly string[]): Promise<void> {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      this.outbox.send({ t: "record", seq, outcomes, bounces, messageIds });
    });
  }

  /** The SMTP thread's answer to record request `seq`. */
  recorded(seq: number, error: string | null): void {
    const w = this.waiting.get(seq);
    if (!w) return;
    this.waiting.delete(seq);
    if (error === null) w.resolve();
    else w.reject(new Error(error));
  }
}
