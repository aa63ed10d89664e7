// Nothing acknowledged is lost: kill -9 under load, next hop outages, restarts mid-schedule,
// graceful shutdown, and bodies large enough to live in spool files.

import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startSink(behaviour = {}) {
  const sink = await Sink.start(behaviour);
  cleanups.push(() => sink.close());
  return sink;
}

async function startRelay(config: Record<string, unknown>, dir?: string) {
  const relay = await Relay.start({ config, ...(dir ? { dir } : {}) });
  cleanups.push(() => relay.cleanup());
  return relay;
}

const tokenOf = (raw: Buffer) => /X-Token: (\S+)/.exec(raw.toString("latin1"))?.[1];

/** Sessions that send numbered messages until told to stop or the relay goes away; returns the acknowledged tokens. */
async function load(port: number, sessions: number, perSession: number, stop: { now: boolean }): Promise<Set<string>> {
  const acked = new Set<string>();
  await Promise.all(
    Array.from({ length: sessions }, async (_, s) => {
      try {
        const { talk } = await SmtpTalk.open(port);
        await talk.send("EHLO load.test");
        for (let i = 0; i < perSession && !stop.now; i++) {
          const token = `s${s}-m${i}`;
          const r = await talk.transaction("load@origin.test", ["bob@dest.test"], `X-Token: ${token}\r\nSubject: load ${token}\r\n\r\n${"body line\r\n".repeat(30)}`);
          if (r.code === 250) acked.add(token);
        }
        talk.close();
      } catch {
        // The relay was killed under us: whatever was acknowledged so far is what counts.
      }
    }),
  );
  return acked;
}

describe("crash safety", () => {
  test("kill -9 during a load of thousands of messages: every 250-acknowledged message reaches the sink after restart", async () => {
    const sink = await startSink();
    const dir = tempDir();
    const config = { relay: { domains: { "dest.test": sink.route } } };
    const relay = await startRelay(config, dir);
    const stop = { now: false };
    const loading = load(relay.port, 20, 200, stop);
    // Kill in the thick of it: after a good share was acknowledged, while sessions are mid-transaction.
    await waitFor(() => sink.messages.length >= 600, 60_000, "600 deliveries under load");
    await relay.kill9();
    stop.now = true;
    const acked = await loading;
    expect(acked.size).toBeGreaterThanOrEqual(600);
    expect(acked.size).toBeLessThan(4000);

    const restarted = await startRelay(config, dir);
    const delivered = () => new Set(sink.messages.map((m) => tokenOf(m.raw)));
    await waitFor(() => [...acked].every((t) => delivered().has(t)), 60_000, "every acknowledged message at the sink");
    await waitFor(() => queueCounts(dir).messages === 0, 30_000, "an empty queue");
    expect([...acked].filter((t) => !delivered().has(t))).toEqual([]);
    expect(await restarted.stop()).toBe(0);
  }, 180_000);

  test("Postfix's smtp-source: 500 messages over 10 sessions, all delivered", async () => {
    const sink = await startSink();
    const relay = await startRelay({ relay: { domains: { "dest.test": sink.route } } });
    const proc = Bun.spawn(["smtp-source", "-s", "10", "-m", "500", "-l", "2048", "-f", "src@origin.test", "-t", "bob@dest.test", "-M", "source.test", `127.0.0.1:${relay.port}`], { stderr: "pipe" });
    expect(await proc.exited).toBe(0);
    await waitFor(() => sink.messages.length >= 500, 30_000, "500 deliveries");
    expect(sink.messages.length).toBe(500);
    expect(await relay.stop()).toBe(0);
  }, 60_000);
});

describe("next hop outage", () => {
  test("next hop down: mail stays queued and is all delivered once it is back", async () => {
    const sink = await startSink();
    const port = sink.port;
    await sink.close();
    const relay = await startRelay({ relay: { domains: { "dest.test": `smtp://127.0.0.1:${port}` } }, queue: { retry_schedule: ["1s", "1s", "1s", "1s", "1s"] }, delivery: { connect_timeout: "1s" } });
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    for (let i = 0; i < 30; i++) {
      expect((await talk.transaction("out@origin.test", ["bob@dest.test"], `X-Token: outage-${i}\r\n\r\nx\r\n`)).code).toBe(250);
    }
    talk.close();
    await relay.waitForLog((l) => l.msg === "delivery attempt" && l.deferred === 1);
    expect(queueCounts(relay.dir).messages).toBe(30);
    await sink.listen(port);
    await waitFor(() => sink.messages.length >= 30, 15_000, "delivery after the next hop came back");
    expect(new Set(sink.messages.map((m) => tokenOf(m.raw))).size).toBe(30);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    await relay.stop();
  }, 60_000);

  test("a restart resumes the retry schedule: no retry skipped or repeated", async () => {
    const sink = await startSink({ rcpt: () => ({ code: 451, message: "4.3.0 try later" }) });
    const dir = tempDir();
    const config = { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["3s", "1h"] } };
    const relay = await startRelay(config, dir);
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.transaction("r@origin.test", ["bob@dest.test"], "Subject: retry\r\n\r\nx\r\n")).code).toBe(250);
    talk.close();
    const first = await relay.waitForLog((l) => l.msg === "delivery attempt" && l.deferred === 1);
    const firstAt = Date.parse(String(first.ts));
    await relay.kill9();

    const row = () => {
      const db = new Database(join(dir, "state", "queue.db"), { readonly: true });
      try {
        return db.query<{ attempts: number; next_attempt_at: number; last_error: string }, []>("SELECT attempts, next_attempt_at, last_error FROM recipients").get()!;
      } finally {
        db.close();
      }
    };
    const afterFirst = row();
    expect(afterFirst.attempts).toBe(1);
    expect(afterFirst.next_attempt_at - firstAt).toBeGreaterThanOrEqual(2900);
    expect(afterFirst.last_error).toContain("451");

    const restarted = await startRelay(config, dir);
    const second = await restarted.waitForLog((l) => l.msg === "delivery attempt", 10_000);
    // The second attempt waited for its slot rather than firing at start-up.
    expect(Date.parse(String(second.ts)) - firstAt).toBeGreaterThanOrEqual(2900);
    await waitFor(() => row().attempts === 2, 5000, "the second attempt recorded");
    expect(row().next_attempt_at - Date.parse(String(second.ts))).toBeGreaterThan(3_500_000);
    expect(restarted.count("delivery attempt")).toBe(1);
    await restarted.stop();
  }, 60_000);
});

describe("shutdown and large messages", () => {
  test("SIGTERM: the transaction in progress completes with 250, new connections are refused, exit 0", async () => {
    const sink = await startSink();
    const relay = await startRelay({ relay: { domains: { "dest.test": sink.route } } });
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.send("MAIL FROM:<late@origin.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
    expect((await talk.send("DATA")).code).toBe(354);
    talk.write("Subject: in flight\r\n\r\nfirst half\r\n");
    relay.proc.kill("SIGTERM");
    await relay.waitForLog((l) => l.msg === "shutting down");
    await waitFor(() => SmtpTalk.connect(relay.port).then((t) => (t.close(), false), () => true), 5000, "the listener to stop accepting");
    talk.write("second half\r\n.\r\n");
    const r = await talk.reply();
    expect(r.code).toBe(250);
    talk.close();
    expect(await relay.exited).toBe(0);
    expect(relay.logs.some((l) => l.msg === "stopped")).toBe(true);
  }, 60_000);

  test("a 3 MiB message goes through a spool file, arrives byte for byte, and the file is removed", async () => {
    const sink = await startSink();
    const relay = await startRelay({ relay: { domains: { "dest.test": sink.route } }, queue: { inline_max_size: "64KiB" } });
    const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-=+*0123456789\r\n";
    const body = `Subject: large\r\nX-Token: large\r\n\r\n${line.repeat(Math.ceil((3 * 1024 * 1024) / line.length))}`;
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.transaction("big@origin.test", ["bob@dest.test"], body)).code).toBe(250);
    talk.close();
    const got = await waitFor(() => sink.messages.find((m) => tokenOf(m.raw) === "large"), 20_000, "the large message");
    const text = got.raw.toString("latin1");
    expect(text.slice(text.indexOf("Subject: large"))).toBe(body);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(readdirSync(join(relay.dir, "state", "spool"))).toEqual([]);
    await relay.stop();
  }, 60_000);
});
