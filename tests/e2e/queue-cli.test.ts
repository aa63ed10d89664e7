// `mailraven queue retry ID` and `mailraven queue flush` from the command line, against a
// running relay whose next hop deferred everything (retries an hour away): retry sends that
// one message now and nothing else; flush sends the rest.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BINARY, queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let accepting = false;
let sink: Sink;
let relay: Relay;
const ids: string[] = [];

const cli = (...args: string[]) => run([BINARY, ...args, "--config", relay.cliConfigPath()]);

beforeAll(async () => {
  sink = await Sink.start({ rcpt: () => (accepting ? undefined : { code: 451, message: "4.3.0 not now" }) });
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["1h", "1h"] } } });
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  for (let i = 0; i < 3; i++) {
    const r = await talk.transaction("a@origin.test", [`r${i}@dest.test`], `Subject: queued ${i}\r\n\r\nx\r\n`);
    expect(r.code).toBe(250);
    ids.push(r.text.slice(-16));
  }
  talk.close();
  // Each got its first attempt and is deferred for an hour.
  await waitFor(() => ids.every((id) => relay.logs.some((l) => l.msg === "delivery attempt" && l.queue_id === id && l.deferred === 1)), 15_000, "three deferrals");
  accepting = true;
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await sink?.close();
}, 60_000);

const attemptsOf = (id: string) => relay.logs.filter((l) => l.msg === "delivery attempt" && l.queue_id === id).length;

describe("mailraven queue", () => {
  test("retry ID: that message is delivered now, the others stay queued for their hour", async () => {
    const r = await cli("queue", "retry", ids[0]!);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${ids[0]}: 1 recipient(s) due now\n`);
    await waitFor(() => sink.messages.some((m) => m.to[0] === "r0@dest.test"), 10_000, "the retried message");
    // A full look of the queue happened for the retry: the others were seen and left alone.
    await waitFor(() => queueCounts(relay.dir).messages === 2, 5000, "two messages left");
    expect(attemptsOf(ids[1]!)).toBe(1);
    expect(attemptsOf(ids[2]!)).toBe(1);
    expect(sink.messages).toHaveLength(1);
  }, 30_000);

  test("retry of an unknown id: non-zero exit with the reason, nothing changes", async () => {
    const r = await cli("queue", "retry", "0000000000000000");
    expect(r.code).toBe(1);
    expect(r.err).toContain("no message 0000000000000000 in the queue");
    expect(queueCounts(relay.dir).messages).toBe(2);
  }, 30_000);

  test("flush: everything left is delivered now, and the queue is empty", async () => {
    const r = await cli("queue", "flush", "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ recipients_rescheduled: 2 });
    await waitFor(() => sink.messages.length === 3, 10_000, "the flushed messages");
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(sink.messages.map((m) => m.to[0]).sort()).toEqual(["r0@dest.test", "r1@dest.test", "r2@dest.test"]);
    const again = await cli("queue", "flush");
    expect(again.code).toBe(0);
    expect(again.out).toBe("0 recipient(s) due now\n");
  }, 30_000);
});
