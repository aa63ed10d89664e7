// Nothing acknowledged is lost: kill -9 under load, next hop outages, restarts mid-schedule,
// graceful shutdown, and bodies large enough to live in spool files.

import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

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

interface Load {
  /** Tokens of the messages the relay answered with 250. */
  readonly acked: Set<string>;
  /** Refusals and errors seen before the kill: each one is a test failure. */
  readonly failures: string[];
  /** Sessions that sent all their messages. */
  finished: number;
  /** Set just before the kill: from then on a broken connection is expected. */
  killed: boolean;
}

/**
 * Sessions that send numbered messages until their count is done or the relay goes away.
 * Each session has its own loopback source address (127.0.0.10, .11, ...), so the per-IP
 * connection cap (10) refuses none of them.
 */
function load(port: number, sessions: number, perSession: number, state: Load): Promise<void> {
  return Promise.all(
    Array.from({ length: sessions }, async (_, s) => {
      try {
        const { talk, greeting } = await SmtpTalk.open(port, { localAddress: `127.0.0.${10 + s}` });
        if (greeting.code !== 220) throw new Error(`greeting ${greeting.code} ${greeting.text}`);
        await talk.send("EHLO load.test");
        for (let i = 0; i < perSession; i++) {
          const token = `s${s}-m${i}`;
          const r = await talk.transaction("load@origin.test", ["bob@dest.test"], `X-Token: ${token}\r\nSubject: load ${token}\r\n\r\n${"body line\r\n".repeat(30)}`);
          if (r.code === 250) state.acked.add(token);
          else if (!state.killed) state.failures.push(`${token}: ${r.code} ${r.text}`);
        }
        state.finished++;
        talk.close();
      } catch (err) {
        // After the kill a session dies with its connection; before it, that is a failure.
        if (!state.killed) state.failures.push(`session ${s}: ${(err as Error).message}`);
      }
    }),
  ).then(() => {});
}

describe("crash safety", () => {
  test("kill -9 during a load of thousands of messages: every 250-acknowledged message reaches the sink after restart", async () => {
    // A slow next hop (two sessions, 5 ms per message) lets a backlog of acknowledged but
    // undelivered messages build up: those are what the crash must not lose.
    let slow = true;
    const sink = await startSink({ hold: () => (slow ? Bun.sleep(5) : undefined) });
    const dir = tempDir();
    const config = { relay: { domains: { "dest.test": sink.route } }, delivery: { concurrency_per_route: 2 } };
    const relay = await startRelay(config, dir);
    const SESSIONS = 20;
    const state: Load = { acked: new Set(), failures: [], finished: 0, killed: false };
    const loading = load(relay.port, SESSIONS, 400, state);
    await waitFor(() => state.acked.size >= 1500 || state.failures.length > 0, 60_000, "1500 acknowledged messages");
    const deliveredAtKill = new Set(sink.messages.map((m) => tokenOf(m.raw)));
    state.killed = true;
    await relay.kill9();
    await loading;
    expect(state.failures).toEqual([]);
    // The kill landed mid-load: every session was still sending, with a backlog not yet delivered.
    expect(state.finished).toBe(0);
    const backlog = [...state.acked].filter((t) => !deliveredAtKill.has(t));
    expect(backlog.length).toBeGreaterThanOrEqual(300);

    slow = false;
    const restarted = await startRelay({ ...config, delivery: {} }, dir);
    const delivered = () => new Set(sink.messages.map((m) => tokenOf(m.raw)));
    const missing = () => {
      const got = delivered();
      return [...state.acked].filter((t) => !got.has(t));
    };
    await waitFor(() => missing().length === 0, 90_000, "every acknowledged message at the sink");
    await waitFor(() => queueCounts(dir).messages === 0, 30_000, "an empty queue");
    expect(missing()).toEqual([]);
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
    // The next hop holds the delivery until the test has looked at the queue.
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    const sink = await startSink({ hold: () => held });
    const relay = await startRelay({ relay: { domains: { "dest.test": sink.route } }, queue: { inline_max_size: "64KiB" } });
    const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-=+*0123456789\r\n";
    const head = "Subject: large\r\nX-Token: large\r\n\r\n";
    const content = line.repeat(Math.ceil((3 * 1024 * 1024) / line.length));
    const body = head + content;
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    const accepted = await talk.transaction("big@origin.test", ["bob@dest.test"], body);
    expect(accepted.code).toBe(250);
    talk.close();
    const id = accepted.text.slice(-16);

    // While it is queued: the row has no inline body, and the spool file holds the body exactly.
    await waitFor(() => sink.dataStarted.length === 1, 20_000, "the delivery to start");
    const db = new Database(join(relay.dir, "state", "queue.db"), { readonly: true });
    try {
      expect(db.query<{ inline: number }, [string]>("SELECT body IS NOT NULL AS inline FROM messages WHERE id = ?").get(id)).toEqual({ inline: 0 });
    } finally {
      db.close();
    }
    const file = join(relay.dir, "state", "spool", id);
    expect(readdirSync(join(relay.dir, "state", "spool"))).toEqual([id]);
    expect(readFileSync(file).equals(Buffer.from(content, "latin1"))).toBe(true);

    release();
    const got = await waitFor(() => sink.messages.find((m) => tokenOf(m.raw) === "large"), 20_000, "the large message");
    const text = got.raw.toString("latin1");
    expect(text.slice(text.indexOf("Subject: large"))).toBe(body);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    await waitFor(() => readdirSync(join(relay.dir, "state", "spool")).length === 0, 5000, "the spool file removed");
    await relay.stop();
  }, 60_000);
});
