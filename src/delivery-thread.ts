// Runs delivery on a thread of its own (deliver/thread.ts) and serves it from the SMTP thread:
// commits the outcomes it reports through the queue store's group commit and answers, writes
// its log lines to stdout, adds its metric deltas to the registry, and passes on wake-ups,
// SIGHUP's configuration and shutdown. A thread that dies is started again (its deliveries in
// flight stay queued and are made again: at-least-once, as after a crash).
//
// This module sits in src/ beside main.ts on purpose: the worker's URL is resolved against it,
// and in the compiled binary import.meta.url is the binary's own (/$bunfs/root/mailraven), so
// "./deliver/thread.ts" names the entry point `bun build --compile` embeds beside main.ts
// (package.json's build lists both).

import type { Config } from "./config/types.ts";
import { applyDeltas } from "./deliver/thread-metrics.ts";
import { Outbox, type ToHost, type ToThread } from "./deliver/thread-protocol.ts";
import { serveStsRequest } from "./deliver/thread-sts.ts";
import type { StsStore } from "./deliver/mta-sts.ts";
import { writeStdout, type Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { QueueStore } from "./queue/store.ts";

const RESTART_DELAY_MS = 1000;

export interface DeliveryThreadDeps {
  /** The configuration in force now (it changes on reload). */
  readonly config: () => Config;
  readonly store: QueueStore;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Where MTA-STS policies outlive a restart (the policy state); none: memory only. */
  readonly stsStore?: StsStore;
  /** Where the thread's log lines go (stdout). */
  readonly write?: (text: string) => void;
}

export class DeliveryThread {
  private worker: Worker | null = null;
  private outbox: Outbox<ToThread> | null = null;
  /** A wake-up is due with the next batch (any number of commits in one turn make one). */
  private wakeWanted = false;
  private wakeEverything = false;
  /** Shared with the thread: 1 while a wake-up it has not acted on is out (thread-protocol.ts). */
  private wakeFlag = new Int32Array(new SharedArrayBuffer(4));
  private stopping = false;
  private closed = false;
  private stopped: (() => void) | null = null;

  constructor(private readonly deps: DeliveryThreadDeps) {}

  start(): void {
    const worker = new Worker(new URL("./deliver/thread.ts", import.meta.url));
    const outbox = new Outbox<ToThread>(
      (batch) => worker.postMessage(batch),
      () => this.takeWake(),
    );
    this.worker = worker;
    this.outbox = outbox;
    worker.onmessage = (event: MessageEvent<ToHost[]>) => {
      for (const m of event.data) this.handle(m, outbox);
    };
    worker.addEventListener("error", (event) => this.deps.log.error("delivery thread error", { error: (event as ErrorEvent).message }));
    worker.addEventListener("close", () => this.exited(worker));
    this.wakeFlag = new Int32Array(new SharedArrayBuffer(4));
    outbox.send({ t: "start", config: this.deps.config(), wakeFlag: this.wakeFlag });
  }

  /** Mail was committed: the thread looks for it now. `everything`: older mail became due too. */
  wake(everything = false): void {
    if (!this.outbox || this.stopping) return;
    // The thread has not looked since the last wake-up: that look will find this mail too.
    if (Atomics.exchange(this.wakeFlag, 0, 1) === 1 && !everything) return;
    this.wakeWanted = true;
    this.wakeEverything ||= everything;
    this.outbox.schedule();
  }

  private takeWake(): ToThread[] {
    if (!this.wakeWanted) return [];
    const wake: ToThread = { t: "wake", everything: this.wakeEverything };
    this.wakeWanted = this.wakeEverything = false;
    return [wake];
  }

  setConfig(config: Config): void {
    this.outbox?.send({ t: "config", config });
  }

  /** Asks the thread to take no more work; resolves once the deliveries in flight are recorded. */
  stop(): Promise<void> {
    this.stopping = true;
    if (!this.outbox) return Promise.resolve();
    const outbox = this.outbox;
    return new Promise((resolve) => {
      this.stopped = resolve;
      outbox.send({ t: "stop" });
    });
  }

  /** Ends the thread now (after the drain time): what it had in flight stays queued. */
  terminate(): void {
    this.closed = true;
    this.worker?.terminate();
    this.worker = null;
    this.outbox = null;
  }

  private handle(m: ToHost, outbox: Outbox<ToThread>): void {
    switch (m.t) {
      case "record": {
        if (this.closed) return;
        const reply = (error: string | null) => {
          if (!this.closed && this.outbox === outbox) outbox.send({ t: "recorded", seq: m.seq, error });
        };
        this.deps.store.record(m.outcomes, m.bounces, m.messageIds).then(
          () => reply(null),
          (err: unknown) => reply(err instanceof Error ? err.message : String(err)),
        );
        return;
      }
      case "log":
        return (this.deps.write ?? writeStdout)(m.text);
      case "metrics":
        return applyDeltas(this.deps.metrics, m.deltas);
      case "stopped":
        return this.stopped?.();
      case "sts-get":
      case "sts-save":
      case "sts-remove":
        return serveStsRequest(this.deps.stsStore ?? null, m, (answer) => {
          if (!this.closed && this.outbox === outbox) outbox.send(answer);
        });
    }
  }

  private exited(worker: Worker): void {
    if (worker !== this.worker) return;
    this.worker = null;
    this.outbox = null;
    if (this.stopping || this.closed) return this.stopped?.();
    this.deps.log.error("the delivery thread ended unexpectedly; starting it again", { in_ms: RESTART_DELAY_MS });
    setTimeout(() => {
      if (!this.stopping && !this.closed) this.start();
    }, RESTART_DELAY_MS);
  }
}
