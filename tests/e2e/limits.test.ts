// Every configured limit, with the exact reply a client sees.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;
// Connection caps get a relay of their own: closing a session there must not race the next test.
let capped: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.0/8"] },
      smtp: {
        max_message_size: "2KiB",
        max_recipients: 3,
        max_line_length: 512,
        idle_timeout: "1s",
        command_timeout: "1s",
      },
    },
  });
  capped = await Relay.start({
    config: { relay: { domains: { "dest.test": sink.route } }, smtp: { max_connections: 3, max_connections_per_ip: 2 } },
  });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, capped]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

async function ehlo(from?: string, port = relay.port): Promise<SmtpTalk> {
  const { talk, greeting } = await SmtpTalk.open(port, from ? { localAddress: from } : {});
  expect(greeting.code).toBe(220);
  expect((await talk.send("EHLO client.test")).code).toBe(250);
  return talk;
}

describe("connection limits", () => {
  test("per client IP: the next connection gets 421 4.7.0 and is closed; per listener: 421 4.3.2", async () => {
    const a1 = await ehlo("127.0.0.1", capped.port);
    const a2 = await ehlo("127.0.0.1", capped.port);
    const overIp = await SmtpTalk.connect(capped.port, { localAddress: "127.0.0.1" });
    const r1 = await overIp.reply();
    expect(r1.code).toBe(421);
    expect(r1.text).toBe("4.7.0 Too many connections from your IP address, try again later");
    await overIp.closed;

    const b1 = await ehlo("127.0.0.2", capped.port);
    const overAll = await SmtpTalk.connect(capped.port, { localAddress: "127.0.0.3" });
    const r2 = await overAll.reply();
    expect(r2.code).toBe(421);
    expect(r2.text).toBe("4.3.2 Too many connections, try again later");
    await overAll.closed;

    // A slot freed is a slot available again (once the relay has seen the close).
    a1.close();
    await a1.closed;
    const again = await waitFor(async () => {
      const attempt = await SmtpTalk.open(capped.port, { localAddress: "127.0.0.3" });
      if (attempt.greeting.code === 220) return attempt;
      attempt.talk.close();
      return null;
    }, 5000, "a free slot");
    for (const t of [a2, b1, again.talk]) t.close();
    await capped.waitForLog((l) => l.msg === "connection refused" && l.reason === "max_connections_per_ip");
  });
});

describe("message limits", () => {
  test("declared SIZE over the limit: 552 5.3.4 at MAIL", async () => {
    const t = await ehlo();
    const r = await t.send("MAIL FROM:<big@origin.test> SIZE=4096");
    expect(r.code).toBe(552);
    expect(r.text).toStartWith("5.3.4 ");
    t.close();
  });

  test("actual data over the limit: 552 5.3.4 after DATA, nothing queued, session still usable", async () => {
    const before = relay.count("message accepted");
    const t = await ehlo();
    const big = `Subject: big\r\n\r\n${"x".repeat(70)}\r\n`.repeat(40);
    const r = await t.transaction("big@origin.test", ["bob@dest.test"], big);
    expect(r.code).toBe(552);
    expect(r.text).toStartWith("5.3.4 ");
    expect(relay.count("message accepted")).toBe(before);
    expect(queueCounts(relay.dir).messages).toBe(0);
    const ok = await t.transaction("small@origin.test", ["bob@dest.test"], "Subject: small\r\n\r\nhi\r\n");
    expect(ok.code).toBe(250);
    t.close();
  });

  test("recipients over the limit: 452 4.5.3 for the extra one, the rest accepted", async () => {
    const t = await ehlo();
    expect((await t.send("MAIL FROM:<many@origin.test>")).code).toBe(250);
    for (const n of [1, 2, 3]) expect((await t.send(`RCPT TO:<r${n}@dest.test>`)).code).toBe(250);
    const r = await t.send("RCPT TO:<r4@dest.test>");
    expect(r.code).toBe(452);
    expect(r.text).toStartWith("4.5.3 ");
    t.close();
  });

  test("a command line over max_line_length gets 421 and the session is closed, however it is split", async () => {
    for (const parts of [[`MAIL FROM:<${"a".repeat(600)}@origin.test>\r\n`], [`MAIL FROM:<${"a".repeat(300)}`, `${"a".repeat(300)}@origin.test>\r\n`]]) {
      const t = await ehlo();
      for (const p of parts) t.write(p);
      const r = await t.reply();
      expect(r.code).toBe(421);
      expect(r.text).toContain("Command line too long");
      await t.closed;
    }
  });
});

describe("timeouts", () => {
  test("idle timeout: 421 4.4.2 and the connection is closed", async () => {
    const t = await ehlo();
    const r = await t.reply(5000);
    expect(r.code).toBe(421);
    expect(r.text).toStartWith("4.4.2 ");
    await t.closed;
  });

  test("command timeout: a command line left unfinished is cut off with 421 4.4.2", async () => {
    const t = await ehlo();
    t.write("MAIL FROM:<slow");
    // Dripping bytes keeps the idle timer alive but not the command timer.
    const drip = setInterval(() => t.write("x"), 300);
    try {
      const r = await t.reply(5000);
      expect(r.code).toBe(421);
      expect(r.text).toContain("command timeout");
      await t.closed;
    } finally {
      clearInterval(drip);
    }
  });
});
