// What the SMTP thread and the delivery thread say to each other (serve.ts starts the
// delivery thread with delivery-thread.ts; its entry point is deliver/thread.ts), and the
// outbox that sends each side's messages together, once per turn of its event loop.

import type { Config } from "../config/types.ts";
import type { NewMessage, RecipientOutcome } from "../queue/store.ts";
import type { Deltas } from "./thread-metrics.ts";
import type { StsAnswer, StsRequest } from "./thread-sts.ts";

export type ToThread =
  /**
   * `wakeFlag[0]` is 1 while a wake-up is on its way or not yet acted on: the SMTP thread sets
   * it and posts "wake" only when it was 0; the delivery thread clears it just before it reads
   * the queue, so a commit after that sends the next one (one message per look, not per commit).
   */
  | { readonly t: "start"; readonly config: Config; readonly wakeFlag: Int32Array }
  /** SIGHUP: the configuration now in force. */
  | { readonly t: "config"; readonly config: Config }
  /** Mail was committed (everything: older mail became due too, an admin retry or flush). */
  | { readonly t: "wake"; readonly everything: boolean }
  /** The outcome of a record request: committed, or why not. */
  | { readonly t: "recorded"; readonly seq: number; readonly error: string | null }
  /** A stored MTA-STS policy the thread asked for (thread-sts.ts). */
  | StsAnswer
  /** Shutdown: take no more work, finish and record what is in flight, then say "stopped". */
  | { readonly t: "stop" };

export type ToHost =
  /** Outcomes of a delivery attempt and the reports they produced, for the store's group commit. */
  | { readonly t: "record"; readonly seq: number; readonly outcomes: readonly RecipientOutcome[]; readonly bounces: readonly NewMessage[]; readonly messageIds: readonly string[] }
  /** Finished log lines (journald priority included when stdout is the journal), for stdout. */
  | { readonly t: "log"; readonly text: string }
  | { readonly t: "metrics"; readonly deltas: Deltas }
  /** MTA-STS policies in the policy state, which the SMTP thread owns (thread-sts.ts). */
  | StsRequest
  | { readonly t: "stopped" };

/**
 * Messages for the other thread, posted as one batch on the next turn of the loop: a burst of
 * wake-ups, log lines or outcomes costs one postMessage. `collect` adds what was gathered
 * outside send() (log text, metric deltas) at that moment.
 */
export class Outbox<T> {
  private batch: T[] = [];
  private scheduled = false;

  constructor(
    private readonly post: (batch: T[]) => void,
    private readonly collect: () => readonly T[] = () => [],
  ) {}

  send(message: T): void {
    this.batch.push(message);
    this.schedule();
  }

  /** Something for collect() is waiting: post soon. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.scheduled = false;
    for (const m of this.collect()) this.batch.push(m);
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.post(batch);
  }
}
