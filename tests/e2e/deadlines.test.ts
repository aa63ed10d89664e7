// Deadlines on client input (Postfix's smtpd_per_request_deadline with smtpd_min_data_rate):
// message content must arrive within smtp.data_timeout, at smtp.min_data_rate, and may not
// stall longer than smtp.command_timeout, DATA and BDAT alike; 421 4.4.2 and the slot is
// free. The error limit, and stress mode (shorter limits near the connection cap).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Relay } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;
let stress: Relay;
const DATA_TIMEOUT_MS = 3000;
const COMMAND_TIMEOUT_MS = 1500;

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route } },
      smtp: { data_timeout: `${DATA_TIMEOUT_MS}ms`, command_timeout: `${COMMAND_TIMEOUT_MS}ms`, min_data_rate: 100, error_limit: 3 },
    },
  });
  stress = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route } },
      smtp: { max_connections: 5, max_connections_per_ip: 5, idle_timeout: "60s", stress: { threshold: 60, timeout: "1s", error_limit: 1 } },
    },
  });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, stress]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

async function inData(port = relay.port, command = "DATA"): Promise<SmtpTalk> {
  const { talk } = await SmtpTalk.open(port);
  await talk.send("EHLO client.test");
  expect((await talk.send("MAIL FROM:<slow@origin.test>")).code).toBe(250);
  expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
  if (command === "DATA") expect((await talk.send("DATA")).code).toBe(354);
  else talk.write(`${command}\r\n`);
  return talk;
}

/** Writes `bytes` every `everyMs` until the connection closes; bounded by `maxWrites`. */
function drip(talk: SmtpTalk, bytes: string, everyMs: number, maxWrites = 200): () => void {
  let n = 0;
  const timer = setInterval(() => {
    if (++n > maxWrites || talk.socket.destroyed) return clearInterval(timer);
    talk.write(bytes);
  }, everyMs);
  return () => clearInterval(timer);
}

describe("message content deadlines", () => {
  test("content sent fast enough but for longer than data_timeout: 421 4.4.2 at the deadline, while another session keeps getting answers", async () => {
    const slow = await inData();
    const started = Date.now();
    const stop = drip(slow, `${"x".repeat(98)}\r\n`, 100); // 1000 B/s: well above min_data_rate
    const other = await SmtpTalk.open(relay.port);
    let answered = 0;
    const done = slow.reply(DATA_TIMEOUT_MS * 3);
    let closed = false;
    void done.finally(() => (closed = true));
    while (!closed) {
      expect((await other.talk.send("NOOP")).code).toBe(250);
      answered++;
    }
    const r = await done;
    const elapsed = Date.now() - started;
    stop();
    expect(r.code).toBe(421);
    expect(r.text).toBe("4.4.2 relay.test Error: data timeout exceeded");
    await slow.closed;
    expect(elapsed).toBeGreaterThanOrEqual(DATA_TIMEOUT_MS - 100);
    expect(answered).toBeGreaterThan(5);
    other.talk.close();
    await relay.waitForLog((l) => l.msg === "data timeout" && l.reason === "data");
  }, 20_000);

  test("content dripping below min_data_rate: 421 4.4.2 once its credit is spent, before data_timeout", async () => {
    const slow = await inData();
    const started = Date.now();
    const stop = drip(slow, "x", 250); // 4 B/s
    const r = await slow.reply(DATA_TIMEOUT_MS * 3);
    stop();
    expect(r.code).toBe(421);
    expect(r.text).toBe("4.4.2 relay.test Error: data timeout exceeded (content arrives too slowly)");
    expect(Date.now() - started).toBeLessThan(DATA_TIMEOUT_MS);
    await slow.closed;
  });

  test("content that stalls longer than command_timeout: 421 4.4.2", async () => {
    const slow = await inData();
    slow.write("Subject: stalled\r\n");
    const r = await slow.reply(DATA_TIMEOUT_MS * 3);
    expect(r.code).toBe(421);
    expect(r.text).toStartWith("4.4.2 ");
    await slow.closed;
  });

  test("BDAT chunks count the same: a chunk dripped below the rate is cut off", async () => {
    const slow = await inData(relay.port, "BDAT 100000 LAST");
    const stop = drip(slow, "y", 250);
    const r = await slow.reply(DATA_TIMEOUT_MS * 3);
    stop();
    expect(r.code).toBe(421);
    expect(r.text).toBe("4.4.2 relay.test Error: data timeout exceeded (content arrives too slowly)");
    await slow.closed;
  });

  test("a message sent at a normal pace is not affected", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.transaction("fast@origin.test", ["bob@dest.test"], `Subject: fast\r\n\r\n${"z".repeat(50_000)}\r\n`)).code).toBe(250);
    talk.close();
  });

  test("the cut-off sessions are counted", async () => {
    const text = await (await relay.admin("GET", "/metrics", null)).text();
    expect(text).toMatch(/^mailraven_smtp_sessions_cut_total\{reason="data"\} [1-9]/m);
    expect(text).toMatch(/^mailraven_smtp_sessions_cut_total\{reason="rate"\} [1-9]/m);
  });
});

describe("the error limit (Postfix's smtpd_hard_error_limit)", () => {
  test("the 3rd error reply is followed by 421 4.7.0 and the close; an accepted message resets the count", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.send("XYZZY")).code).toBe(500);
    expect((await talk.send("MAIL FROM:<a@origin.test> XJUNK=1")).code).toBe(555);
    expect((await talk.transaction("ok@origin.test", ["bob@dest.test"], "Subject: resets\r\n\r\nx\r\n")).code).toBe(250);
    expect((await talk.send("XYZZY")).code).toBe(500);
    expect((await talk.send("XYZZY")).code).toBe(500);
    expect((await talk.send("XYZZY")).code).toBe(500);
    const cut = await talk.reply();
    expect(cut.code).toBe(421);
    expect(cut.text).toBe("4.7.0 relay.test Error: too many errors; closing connection");
    await talk.closed;
  });
});

describe("stress mode", () => {
  test("at 60% of max_connections: entered (logged), idle sessions cut after stress.timeout, one error ends a session; left when they go", async () => {
    const a = await SmtpTalk.open(stress.port);
    const b = await SmtpTalk.open(stress.port);
    expect((await a.talk.send("EHLO a.test")).code).toBe(250);
    const c = await SmtpTalk.open(stress.port);
    const entered = await stress.waitForLog((l) => l.msg === "stress mode entered");
    expect(entered).toMatchObject({ connections: 3, max_connections: 5, idle_timeout_ms: 1000, error_limit: 1 });
    // One error is the limit now.
    expect((await c.talk.send("XYZZY")).code).toBe(500);
    const cut = await c.talk.reply();
    expect(cut.code).toBe(421);
    expect(cut.text).toStartWith("4.7.0 ");
    // The idle ones get the 1 s idle timeout instead of 60 s.
    for (const idle of [a, b]) {
      const r = await idle.talk.reply(5000);
      expect(r.code).toBe(421);
      expect(r.text).toStartWith("4.4.2 ");
      await idle.talk.closed;
    }
    await stress.waitForLog((l) => l.msg === "stress mode left");
    // Not under stress any more: the full limits again.
    const d = await SmtpTalk.open(stress.port);
    expect((await d.talk.send("XYZZY")).code).toBe(500);
    expect((await d.talk.send("NOOP")).code).toBe(250);
    d.talk.close();
  }, 20_000);
});
