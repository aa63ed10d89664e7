// `mailraven serve`: open the queue, start the delivery worker and the SMTP listeners, and
// shut down in order on SIGTERM: stop accepting, let sessions finish, let deliveries record.

import { buildPipeline } from "./checks/index.ts";
import type { Config } from "./config/types.ts";
import { DeliveryWorker } from "./deliver/worker.ts";
import type { Logger } from "./log.ts";
import { QueueStore } from "./queue/store.ts";
import { assertLibraryCompatible } from "./smtp/connection-adapter.ts";
import { startSmtpListener, type SmtpListener } from "./smtp/listener.ts";

const DELIVERY_DRAIN_MS = 10_000;

export interface Running {
  readonly listeners: readonly SmtpListener[];
  shutdown(): Promise<void>;
}

export async function serve(config: Config, log: Logger, version: string): Promise<Running> {
  assertLibraryCompatible();
  const store = QueueStore.open(config.stateDir);
  const worker = new DeliveryWorker({ config, store, log });
  const pipeline = buildPipeline(config);
  const listeners: SmtpListener[] = [];
  try {
    for (const address of config.smtp.listen) {
      listeners.push(await startSmtpListener(address, { config, pipeline, store, log, onQueued: () => worker.wake() }));
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    store.close();
    throw err;
  }
  worker.start();
  log.info("mailraven started", { version, hostname: config.hostname, state_dir: config.stateDir, queue: store.depth() });

  let stopping: Promise<void> | null = null;
  const shutdown = () =>
    (stopping ??= (async () => {
      const started = Date.now();
      log.info("shutting down", { open_listeners: listeners.length });
      await Promise.all(listeners.map((l) => l.close()));
      // Deliveries in flight get a moment to record their outcome; any cut short stay
      // queued and are sent again after restart (at-least-once).
      await Promise.race([worker.stop(), Bun.sleep(DELIVERY_DRAIN_MS)]);
      store.close();
      log.info("stopped", { duration_ms: Date.now() - started });
    })());
  return { listeners, shutdown };
}
