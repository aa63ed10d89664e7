// The delivery thread as the SMTP thread runs it (src/delivery-thread.ts), in process with a
// real queue on disk and a real next hop on loopback: its outcomes are committed by the
// store here, its log lines and metrics arrive here, and a thread that dies is started again
// without losing the mail it had in hand.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/parse.ts";
import { DeliveryThread } from "../../src/delivery-thread.ts";
import { createLogger } from "../../src/log.ts";
import { createMetrics } from "../../src/metrics.ts";
import { QueueStore } from "../../src/queue/store.ts";
import { waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";

const dir = mkdtempSync(join(tmpdir(), "mailraven-thread-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const enc = new TextEncoder();

test("outcomes committed here, lines and metrics sent here, and a dead thread started again with its mail still queued", async () => {
  // The first delivery is held at the next hop, so it is in the thread's hands when the thread dies.
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  let first = true;
  const sink = await Sink.start({ hold: () => (first ? ((first = false), held) : undefined) });
  const config = parseConfig({ hostname: "relay.test", state_dir: join(dir, "state"), relay: { domains: { "dest.test": sink.route } }, admin: { enabled: false } }, { cwd: dir });
  const store = QueueStore.open(config.stateDir);
  const metrics = createMetrics();
  const ours: string[] = [];
  const theirs: string[] = [];
  const log = createLogger("debug", (line) => ours.push(line));
  const thread = new DeliveryThread({ config: () => config, store, log, metrics, write: (text) => theirs.push(...text.split("\n").filter(Boolean)) });
  const lines = () => theirs.map((t) => JSON.parse(t) as { msg: string; delivered?: number });
  const enqueue = async (token: string) => {
    const head = enc.encode(`X-Token: ${token}\r\nSubject: ${token}\r\n\r\n`);
    const body = enc.encode("body\r\n");
    await store.enqueue({ id: store.newId(), sender: "alice@origin.test", recipients: [{ address: "bob@dest.test", route: sink.route }], head, inlineBody: body, size: head.length + body.length, receivedAt: Date.now(), clientIp: "127.0.0.1" });
    thread.wake();
  };
  try {
    thread.start();
    await waitFor(() => lines().some((l) => l.msg === "delivery thread started"), 10_000, "the thread to start");
    await enqueue("before-crash");
    await waitFor(() => sink.dataStarted.length === 1, 10_000, "the first delivery to reach the next hop");

    // The thread dies with that delivery in flight (as an uncaught native crash would end it).
    (thread as unknown as { worker: Worker }).worker.terminate();
    await waitFor(() => ours.some((l) => l.includes("the delivery thread ended unexpectedly")), 10_000, "the death noticed");
    release();
    // Started again, it finds the message still queued (the cut attempt was never recorded) and sends it.
    await waitFor(() => lines().filter((l) => l.msg === "delivery thread started").length === 2, 10_000, "the thread started again");
    await enqueue("after-restart");
    const tokens = () => sink.messages.map((m) => /X-Token: (\S+)/.exec(m.raw.toString("latin1"))?.[1]);
    await waitFor(() => tokens().includes("after-restart") && tokens().filter((t) => t === "before-crash").length >= 2, 15_000, "both messages delivered by the new thread");
    await waitFor(() => store.depth().messages === 0, 10_000, "the outcomes committed by the store");
    const attempts = (await metrics.registry.getSingleMetricAsString("mailraven_delivery_attempts_total")).split("\n").find((l) => l.includes('outcome="delivered"'));
    expect(Number(attempts?.split(" ").pop())).toBeGreaterThanOrEqual(2);
    expect(lines().filter((l) => l.msg === "delivery attempt" && l.delivered === 1).length).toBeGreaterThanOrEqual(2);
    await thread.stop();
  } finally {
    thread.terminate();
    store.close();
    await sink.close();
  }
}, 60_000);
