// Accept and deliver: real clients (nodemailer, swaks) -> compiled relay -> real sink.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.0/8"] } } });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

const RECEIVED = /^Received: from \S+ \(unknown \[127\.0\.0\.1\]\)\r\n\tby relay\.test \(mailraven\) with ESMTP id ([0-9A-Z]{16})(\r\n\tfor <[^>]+>)?;\r\n\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/;

describe("accept and deliver", () => {
  test("EHLO advertises the extensions and no AUTH or STARTTLS without a certificate", async () => {
    const { talk, greeting } = await SmtpTalk.open(relay.port);
    expect(greeting.code).toBe(220);
    expect(greeting.text).toStartWith("relay.test ESMTP");
    const ehlo = await talk.send("EHLO client.test");
    expect(ehlo.code).toBe(250);
    const ext = ehlo.lines.map((l) => l.slice(4));
    for (const e of ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", `SIZE ${25 * 1024 * 1024}`]) expect(ext).toContain(e);
    expect(ext.some((e) => e.startsWith("AUTH") || e === "STARTTLS")).toBe(false);
    expect((await talk.send("QUIT")).code).toBe(221);
    talk.close();
  });

  test("a message from nodemailer arrives byte for byte after our Received header", async () => {
    const raw =
      "From: Alice <alice@origin.test>\r\nTo: bob@dest.test\r\nSubject: byte for byte\r\nMessage-ID: <bfb-1@origin.test>\r\n" +
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
      "Grüße aus Köln\r\n.leading dot line\r\n..two dots\r\n\r\ntrailing blank lines follow\r\n\r\n\r\n";
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: relay.port, secure: false, ignoreTLS: true, name: "client.test" });
    const info = await transport.sendMail({ envelope: { from: "alice@origin.test", to: ["bob@dest.test"] }, raw });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{16}$/);
    const queueId = info.response.slice(-16);
    const got = await waitFor(() => sink.messages.find((m) => m.raw.includes("bfb-1@origin.test")), 10_000, "delivery");
    expect(got.from).toBe("alice@origin.test");
    expect(got.to).toEqual(["bob@dest.test"]);
    const text = got.raw.toString("latin1");
    const m = RECEIVED.exec(text);
    expect(m).not.toBeNull();
    expect(m![1]).toBe(queueId);
    expect(m![2]).toBe("\r\n\tfor <bob@dest.test>");
    expect(got.raw.subarray(m![0].length).equals(Buffer.from(raw, "utf8"))).toBe(true);
  });

  test("several recipients: one copy, no recipient named in the trace header", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    const done = await talk.transaction("multi@origin.test", ["a@dest.test", "b@dest.test", "c@dest.test"], "Subject: multi\r\n\r\nhello\r\n");
    expect(done.code).toBe(250);
    expect(done.text).toMatch(/^2\.0\.0 Ok: queued as [0-9A-Z]{16}$/);
    talk.close();
    const got = await waitFor(() => sink.messages.find((m) => m.from === "multi@origin.test"), 10_000, "delivery");
    expect(got.to.sort()).toEqual(["a@dest.test", "b@dest.test", "c@dest.test"]);
    expect(got.raw.toString("latin1")).not.toContain("\tfor <");
  });

  test("swaks: pipelined transaction, queued and delivered, queue empty afterwards", async () => {
    const proc = Bun.spawn(
      ["swaks", "--server", `127.0.0.1:${relay.port}`, "--pipeline", "--from", "swaks@origin.test", "--to", "carol@dest.test", "--header", "Subject: swaks-e2e", "--body", "swaks body"],
      { stdout: "pipe", stderr: "pipe" },
    );
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    expect(code).toBe(0);
    expect(out).toMatch(/<-\s+250 2\.0\.0 Ok: queued as [0-9A-Z]{16}/);
    const got = await waitFor(() => sink.messages.find((m) => m.from === "swaks@origin.test"), 10_000, "delivery");
    expect(got.raw.toString()).toContain("Subject: swaks-e2e");
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(queueCounts(relay.dir)).toEqual({ messages: 0, recipients: 0 });
  });

  test("a message that already passed 50 relays is a loop: 554 5.4.6, nothing queued", async () => {
    const { talk: t } = await SmtpTalk.open(relay.port);
    await t.send("EHLO client.test");
    const loop = await t.transaction("loop@origin.test", ["bob@dest.test"], `${"Received: from a by b; Sat, 21 Nov 2026 08:00:00 +0000\r\n".repeat(51)}Subject: loop\r\n\r\nx\r\n`);
    expect(loop.code).toBe(554);
    expect(loop.text).toStartWith("5.4.6 Too many hops");
    const fifty = await t.transaction("loop@origin.test", ["bob@dest.test"], `${"Received: from a by b; Sat, 21 Nov 2026 08:00:00 +0000\r\n".repeat(50)}Subject: ok\r\n\r\nx\r\n`);
    expect(fifty.code).toBe(250);
    t.close();
  });

  test("the accept log line carries the fields an admin greps for, and no body", async () => {
    const line = await relay.waitForLog((l) => l.msg === "message accepted" && l.from === "swaks@origin.test");
    for (const k of ["cid", "client_ip", "queue_id", "from", "rcpt_count", "size", "code", "duration_ms"]) expect(line).toHaveProperty(k);
    expect(JSON.stringify(relay.logs)).not.toContain("swaks body");
  });
});
