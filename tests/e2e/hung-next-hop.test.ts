// A next hop that accepts the connection and then hangs: silent after the message data (the
// relay gives up after delivery.timeout and retries), or silent from the start, never
// greeting (connect_timeout). Mail for other routes keeps flowing meanwhile.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { Relay, type LogLine, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const TIMEOUT_MS = 4000;
let hanging: Sink;
let fast: Sink;
let mute: Server;
const muted: Socket[] = [];
let relay: Relay;

beforeAll(async () => {
  // The first message's data is taken and then never answered; later attempts are accepted.
  hanging = await Sink.start({ hold: (_m, attempt) => (attempt === 1 ? new Promise<void>(() => {}) : undefined) });
  fast = await Sink.start();
  // Accepts TCP connections and never says a word.
  mute = createServer((s) => {
    muted.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
  const mutePort = (mute.address() as { port: number }).port;
  relay = await Relay.start({
    config: {
      relay: { domains: { "hang.test": hanging.route, "fast.test": fast.route, "mute.test": `smtp://127.0.0.1:${mutePort}` } },
      delivery: { timeout: `${TIMEOUT_MS}ms`, connect_timeout: "1s" },
      queue: { retry_schedule: ["1s", "1s", "1s", "1s", "1s", "1s"] },
    },
  });
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await hanging?.close();
  await fast?.close();
  for (const s of muted) s.destroy();
  await new Promise<void>((resolve) => (mute ? mute.close(() => resolve()) : resolve()));
}, 60_000);

async function send(to: string, subject: string): Promise<string> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction("sender@origin.test", [to], `Subject: ${subject}\r\n\r\nbody\r\n`);
  talk.close();
  expect(r.code).toBe(250);
  return r.text.slice(-16);
}

const attempts = (id: string) => relay.logs.filter((l) => l.msg === "delivery attempt" && l.queue_id === id);
const ts = (l: LogLine) => Date.parse(String(l.ts));

function recipientRow(id: string): { attempts: number; last_error: string | null } | null {
  const db = new Database(join(relay.dir, "state", "queue.db"), { readonly: true });
  try {
    return db.query<{ attempts: number; last_error: string | null }, [string]>("SELECT attempts, last_error FROM recipients WHERE message_id = ?").get(id);
  } finally {
    db.close();
  }
}

describe("a next hop that hangs", () => {
  test("silent after the data: timed out after delivery.timeout, deferred, retried and delivered once; other routes unaffected", async () => {
    const id = await send("bob@hang.test", "hangs at first");
    await waitFor(() => hanging.dataStarted.length === 1, 10_000, "the first attempt to reach the end of data");

    // While that session hangs, mail for another route goes through at once.
    const others = await Promise.all(Array.from({ length: 5 }, (_, i) => send(`u${i}@fast.test`, `meanwhile ${i}`)));
    await waitFor(() => fast.messages.length === 5, 10_000, "the other route's mail");
    expect(attempts(id)).toHaveLength(0); // all arrived before the hung attempt even timed out
    expect(others).toHaveLength(5);

    const first = await relay.waitForLog((l) => l.msg === "delivery attempt" && l.queue_id === id, 15_000);
    expect(first).toMatchObject({ deferred: 1, delivered: 0 });
    expect(String(first.response)).toMatch(/timeout/i);
    // It waited for the timeout, and not (much) longer.
    expect(Number(first.duration_ms)).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);
    expect(Number(first.duration_ms)).toBeLessThan(TIMEOUT_MS + 3000);

    const second = await relay.waitForLog((l) => l.msg === "delivery attempt" && l.queue_id === id && l.delivered === 1, 15_000);
    expect(ts(second) - ts(first)).toBeGreaterThanOrEqual(900); // the 1s retry slot
    await waitFor(() => hanging.messages.length === 1, 5000, "the retried message");
    expect(hanging.messages.map((m) => m.raw.toString("latin1")).filter((r) => r.includes("Subject: hangs at first"))).toHaveLength(1);
  }, 60_000);

  test("never greets: each attempt gives up after connect_timeout and is retried on schedule; the mail stays queued", async () => {
    const id = await send("bob@mute.test", "never greeted");
    const first = await relay.waitForLog((l) => l.msg === "delivery attempt" && l.queue_id === id, 10_000);
    expect(first).toMatchObject({ deferred: 1 });
    // connect_timeout (1 s) ended it, well before delivery.timeout (4 s) would have.
    expect(Number(first.duration_ms)).toBeGreaterThanOrEqual(900);
    expect(Number(first.duration_ms)).toBeLessThan(2500);
    await waitFor(() => attempts(id).length >= 2, 10_000, "a second attempt");
    await waitFor(() => (recipientRow(id)?.attempts ?? 0) >= 2, 5000, "two attempts recorded");
    expect(recipientRow(id)!.last_error).toMatch(/4\.4\.1|greeting|timeout/i);
    // Other routes are still served.
    await send("after@fast.test", "after the mute one");
    await waitFor(() => fast.messages.some((m) => m.raw.includes("Subject: after the mute one")), 10_000, "the other route's mail");
  }, 60_000);
});
