// SIGTERM while deliveries are in flight: the relay stops taking work, records the outcome of
// the deliveries that finish while it drains, exits 0, and what was cut short stays queued
// and is delivered after the restart. Nothing is lost (and a message the next hop accepted
// is not left in the queue to be sent twice).

import { afterEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

const tokenOf = (raw: Buffer) => /X-Token: (\S+)/.exec(raw.toString("latin1"))?.[1] ?? "";

function queuedIds(dir: string): string[] {
  const db = new Database(join(dir, "state", "queue.db"), { readonly: true });
  try {
    return db.query<{ id: string }, []>("SELECT id FROM messages ORDER BY id").all().map((r) => r.id);
  } finally {
    db.close();
  }
}

test("SIGTERM with deliveries in flight: finished ones recorded, cut ones redelivered after restart, exit 0, nothing lost", async () => {
  // Every delivery is held at the end of its data until the test lets it go (or never).
  const held = new Map<string, () => void>();
  let holding = true;
  const sink = await Sink.start({
    hold: (m) => (holding ? new Promise<void>((resolve) => held.set(tokenOf(m.raw), resolve)) : undefined),
  });
  cleanups.push(() => sink.close());
  const dir = tempDir();
  const config = { relay: { domains: { "dest.test": sink.route } } };
  const relay = await Relay.start({ config, dir });
  cleanups.push(() => relay.cleanup());

  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const ids = new Map<string, string>();
  for (let i = 0; i < 8; i++) {
    const r = await talk.transaction("a@origin.test", ["bob@dest.test"], `X-Token: t${i}\r\nSubject: in flight ${i}\r\n\r\nbody ${i}\r\n`);
    expect(r.code).toBe(250);
    ids.set(`t${i}`, r.text.slice(-16));
  }
  talk.close();
  await waitFor(() => held.size === 8, 15_000, "eight deliveries in flight");

  relay.proc.kill("SIGTERM");
  await relay.waitForLog((l) => l.msg === "shutting down");
  // Half of them finish during the drain; the other half are still hanging when it ends.
  const finished = ["t0", "t1", "t2", "t3"];
  for (const t of finished) held.get(t)!();
  await waitFor(() => sink.messages.length === 4, 10_000, "four deliveries accepted during the drain");
  expect(await relay.exited).toBe(0);
  expect(relay.logs.some((l) => l.msg === "stopped")).toBe(true);

  // The four accepted ones were recorded (gone from the queue); the four cut short stay queued.
  const cut = ["t4", "t5", "t6", "t7"];
  expect(queuedIds(dir)).toEqual(cut.map((t) => ids.get(t)!).sort());

  holding = false;
  const restarted = await Relay.start({ config, dir });
  cleanups.push(async () => void (restarted.proc.exitCode === null && (await restarted.stop())));
  await waitFor(() => cut.every((t) => sink.messages.some((m) => tokenOf(m.raw) === t)), 20_000, "the cut deliveries made again");
  await waitFor(() => queueCounts(dir).messages === 0, 10_000, "an empty queue");
  const tokens = sink.messages.map((m) => tokenOf(m.raw)).sort();
  // Every message exactly once: the ones accepted during the drain were not sent again.
  expect(tokens).toEqual([...finished, ...cut].sort());
  expect(await restarted.stop()).toBe(0);
}, 90_000);
