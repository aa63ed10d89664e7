// The delivery thread's entry point (a Bun Worker; delivery-thread.ts starts it). It runs the
// delivery worker (worker.ts) beside the SMTP thread, so accepting and delivering each have a
// core. It reads the queue on a connection of its own (WAL lets it read while the SMTP thread
// commits) and never writes to it: the outcomes of each attempt, with the reports they
// produce, go back to the SMTP thread, whose group commit makes them durable together with
// the mail being accepted. One writer means no SQLite write lock to wait for (busy_timeout
// would block the SMTP thread's loop). Log lines and metric deltas go back too: one stdout
// writer, one Prometheus registry.

import type { Database } from "bun:sqlite";
import type { Config } from "../config/types.ts";
import { createLogger, installCrashGuards, linesTo } from "../log.ts";
import { QueueReader } from "../queue/reader.ts";
import { MetricDeltas } from "./thread-metrics.ts";
import { Outbox, type ToHost, type ToThread } from "./thread-protocol.ts";
import { ThreadQueue } from "./thread-queue.ts";
import { RemoteStsStore } from "./thread-sts.ts";
import { DeliveryWorker } from "./worker.ts";

declare const self: Worker;

let config: Config | null = null;
let worker: DeliveryWorker | null = null;
let queue: ThreadQueue | null = null;
let db: Database | null = null;
let logText = "";
let sts: RemoteStsStore | null = null;
const outbox = new Outbox<ToHost>(
  (batch) => self.postMessage(batch),
  () => {
    const extra: ToHost[] = [];
    if (logText) extra.push({ t: "log", text: logText });
    logText = "";
    const deltas = metrics.take();
    if (deltas) extra.push({ t: "metrics", deltas });
    return extra;
  },
);
const metrics = new MetricDeltas(() => outbox.schedule());

self.onmessage = (event: MessageEvent<ToThread[]>) => {
  for (const m of event.data) handle(m);
};

function handle(m: ToThread): void {
  switch (m.t) {
    case "start":
      return start(m.config, m.wakeFlag);
    case "config":
      config = m.config;
      return;
    case "wake":
      return worker?.wake(m.everything);
    case "recorded":
      return queue?.recorded(m.seq, m.error);
    case "sts":
      return sts?.answered(m);
    case "stop":
      return void stop();
  }
}

function start(initial: Config, wakeFlag: Int32Array): void {
  config = initial;
  const log = createLogger(initial.logLevel, linesTo(process.env.JOURNAL_STREAM, (text) => ((logText += text), outbox.schedule())));
  installCrashGuards(log, " in the delivery thread");
  const opened = QueueReader.open(initial.stateDir);
  db = opened.db;
  queue = new ThreadQueue(opened.reader, outbox);
  sts = new RemoteStsStore((request) => outbox.send(request));
  worker = new DeliveryWorker({ config: () => config!, store: queue, log, metrics, stsStore: sts, looking: () => Atomics.store(wakeFlag, 0, 0) });
  worker.start();
  // After the first look at the queue (start() asked for it first): from here on, new mail
  // reaches delivery only through the wake-ups the SMTP thread sends after each commit.
  setTimeout(() => log.info("delivery thread started"), 0);
}

async function stop(): Promise<void> {
  await worker?.stop();
  db?.close();
  db = null;
  outbox.send({ t: "stopped" });
  outbox.flush();
}
