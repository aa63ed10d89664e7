// Delivery runs on its own thread (src/delivery-thread.ts, src/deliver/thread.ts) while the
// SMTP thread accepts: the thread is woken by each commit rather than finding mail on its
// idle look, its outcomes are committed by the SMTP thread, and its log lines reach stdout
// intact, with journald priorities when stdout is the journal. (Its metrics: admin.test.ts;
// SIGHUP's configuration: vanished-route.test.ts; SIGTERM's drain: shutdown-deliveries.test.ts.)

import { afterEach, expect, test } from "bun:test";
import { journalLine, queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

async function start(sinkBehaviour = {}, opts: { journal?: boolean } = {}) {
  const sink = await Sink.start(sinkBehaviour);
  cleanups.push(() => sink.close());
  const relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } } }, ...opts });
  cleanups.push(() => relay.cleanup());
  return { sink, relay };
}

async function send(port: number, token: string, to = "bob@dest.test"): Promise<void> {
  const { talk } = await SmtpTalk.open(port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction("alice@origin.test", [to], `X-Token: ${token}\r\nSubject: ${token}\r\n\r\nbody\r\n`);
  talk.close();
  expect(r.code).toBe(250);
}

test("mail committed on an idle relay is delivered at once: the commit wakes the delivery thread (its idle look is a minute away)", async () => {
  const { sink, relay } = await start();
  // The thread has looked at the (empty) queue; its next look of its own is 60 s away.
  await relay.waitForLog((l) => l.msg === "delivery thread started");
  const tokens = ["first", "second", "third", "fourth", "fifth"];
  for (const token of tokens) {
    await send(relay.port, token);
    // Well under the idle look: only the wake-up after the commit gets it there in time.
    await waitFor(() => sink.messages.some((m) => m.raw.includes(`X-Token: ${token}`)), 15_000, `delivery of ${token}`);
  }
  await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "the outcomes committed");
  expect(relay.logs.filter((l) => l.msg === "delivery attempt" && l.delivered === 1)).toHaveLength(5);
  // Each message was found by the look its commit's wake-up asked for, not by a later look of
  // the thread's own (which follows a wake-up by a second and would find a message whose
  // wake-up never came): one new-mail look per message, bar one that a timed look beat to it.
  const woken = relay.logs.filter((l) => l.msg === "queue looked at" && l.for === "new mail").reduce((n, l) => n + Number(l.recipients), 0);
  expect(woken).toBeGreaterThanOrEqual(tokens.length - 1);
  expect(await relay.stop()).toBe(0);
}, 60_000);

test("under journald, the delivery thread's lines carry their priority and arrive whole, like the SMTP thread's", async () => {
  const { sink, relay } = await start({ rcpt: (a: string) => (a.startsWith("gone@") ? { code: 550, message: "5.1.1 no such user" } : undefined) }, { journal: true });
  const lines = () => relay.logs.map(journalLine);
  for (let i = 0; i < 20; i++) await send(relay.port, `j${i}`, i % 2 ? "gone@dest.test" : "bob@dest.test");
  await waitFor(() => lines().filter((l) => l.msg === "delivery attempt").length === 20, 15_000, "20 delivery attempts logged");
  expect(sink.messages).toHaveLength(10);
  // Every line is "<N>" + one JSON object: none cut, none interleaved with another.
  expect(relay.logs.filter((l) => l.level === "raw" && !/^<\d>\{.*\}$/.test(l.msg))).toEqual([]);
  expect(relay.logs.every((l) => l.level === "raw")).toBe(true);
  const attempt = lines().find((l) => l.msg === "delivery attempt")!;
  expect(attempt.priority).toBe(6);
  const failed = lines().filter((l) => l.msg === "recipient failed");
  expect(failed).toHaveLength(10);
  expect(failed.every((l) => l.priority === 4 && l.level === "warn")).toBe(true);
  expect(lines().find((l) => l.msg === "mailraven started")!.priority).toBe(6);
  expect(await relay.stop()).toBe(0);
}, 60_000);
