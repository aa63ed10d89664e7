// Delivery outcomes per recipient: retries on 4xx, DSN bounces on 5xx or when the schedule
// runs out, never a bounce for a bounce, and LMTP's per-recipient answers.

import { afterEach, describe, expect, test } from "bun:test";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink, type SinkBehaviour } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

async function setup(behaviour: SinkBehaviour, schedule = ["1s", "1s"]) {
  const sink = await Sink.start(behaviour);
  cleanups.push(() => sink.close());
  // The sender's domain is routed to the same sink, so bounces can be watched arriving.
  const relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route, "origin.test": sink.route } }, queue: { retry_schedule: schedule } } });
  cleanups.push(async () => {
    await relay.stop();
    relay.cleanup();
  });
  return { sink, relay };
}

async function send(port: number, from: string, to: string[], body: string) {
  const { talk } = await SmtpTalk.open(port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction(from, to, body);
  talk.close();
  expect(r.code).toBe(250);
  return r.text.slice(-16);
}

/** Splits a DSN into its MIME parts by the boundary named in its Content-Type. */
function dsnParts(raw: string): { top: string; parts: string[] } {
  const boundary = /boundary="([^"]+)"/.exec(raw)?.[1];
  expect(boundary).toBeDefined();
  const sections = raw.split(`--${boundary}`);
  return { top: sections[0]!, parts: sections.slice(1, -1) };
}

describe("retries", () => {
  test("4xx at RCPT, then accepted on the retry: delivered exactly once", async () => {
    const { sink, relay } = await setup({ rcpt: (_a, n) => (n === 1 ? { code: 451, message: "4.7.1 greylisted" } : undefined) });
    await send(relay.port, "alice@origin.test", ["bob@dest.test"], "Subject: retry me\r\n\r\nbody\r\n");
    await waitFor(() => sink.messages.length === 1, 10_000, "delivery on retry");
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000);
    expect(sink.messages).toHaveLength(1);
    expect(relay.logs.filter((l) => l.msg === "delivery attempt").map((l) => [l.deferred, l.delivered])).toEqual([[1, 0], [0, 1]]);
  }, 30_000);
});

describe("bounces", () => {
  test("5xx for one recipient: the other is delivered, the sender gets an RFC 3464 report for the failed one", async () => {
    const { sink, relay } = await setup({ rcpt: (a) => (a === "bad@dest.test" ? { code: 550, message: "5.1.1 No such user here" } : undefined) });
    const id = await send(relay.port, "alice@origin.test", ["good@dest.test", "bad@dest.test"], "Subject: will bounce\r\nMessage-ID: <orig-1@origin.test>\r\n\r\nsecret body text\r\n");
    const dsn = await waitFor(() => sink.messages.find((m) => m.from === ""), 10_000, "the bounce");
    expect(dsn.to).toEqual(["alice@origin.test"]);
    expect(sink.messages.find((m) => m.from === "alice@origin.test")!.to).toEqual(["good@dest.test"]);
    const raw = dsn.raw.toString("latin1");
    const { top, parts } = dsnParts(raw);
    expect(top).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status; boundary=/m);
    expect(top).toContain("To: <alice@origin.test>");
    expect(top).toContain("Auto-Submitted: auto-replied");
    expect(parts).toHaveLength(3);
    expect(parts[0]).toContain("Content-Type: text/plain");
    expect(parts[0]).toContain("<bad@dest.test>: 550 5.1.1 No such user here");
    expect(parts[1]).toContain("Content-Type: message/delivery-status");
    expect(parts[1]).toContain("Reporting-MTA: dns; relay.test");
    expect(parts[1]).toContain(`X-Mailraven-Queue-ID: ${id}`);
    expect(parts[1]).toContain("Final-Recipient: rfc822; bad@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 No such user here");
    expect(parts[1]).not.toContain("good@dest.test");
    expect(parts[2]).toContain("Content-Type: text/rfc822-headers");
    expect(parts[2]).toContain("Message-ID: <orig-1@origin.test>");
    expect(raw).not.toContain("secret body text");
    expect(raw).not.toMatch(/[^\r]\n/);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
  }, 30_000);

  test("a 5xx after DATA bounces every recipient of that transaction", async () => {
    const { sink, relay } = await setup({ data: (m) => (m.from === "alice@origin.test" ? { code: 554, message: "5.6.0 Content rejected" } : undefined) });
    await send(relay.port, "alice@origin.test", ["x@dest.test", "y@dest.test"], "Subject: rejected content\r\n\r\nx\r\n");
    const dsn = await waitFor(() => sink.messages.find((m) => m.from === ""), 10_000, "the bounce");
    const raw = dsn.raw.toString("latin1");
    for (const r of ["x@dest.test", "y@dest.test"]) expect(raw).toContain(`Final-Recipient: rfc822; ${r}\r\nAction: failed\r\nStatus: 5.6.0`);
  }, 30_000);

  test("4xx until the schedule runs out: bounced after the last retry", async () => {
    const { sink, relay } = await setup({ rcpt: (a) => (a === "slow@dest.test" ? { code: 452, message: "4.2.2 Mailbox full" } : undefined) });
    await send(relay.port, "alice@origin.test", ["slow@dest.test"], "Subject: never\r\n\r\nx\r\n");
    const dsn = await waitFor(() => sink.messages.find((m) => m.from === ""), 15_000, "the bounce");
    const raw = dsn.raw.toString("latin1");
    expect(raw).toContain("Status: 5.2.2");
    expect(raw).toContain("gave up after 3 attempts");
    expect(relay.count("delivery attempt")).toBeGreaterThanOrEqual(3);
  }, 30_000);

  test("mail from the null sender is never bounced", async () => {
    const { sink, relay } = await setup({ rcpt: () => ({ code: 550, message: "5.1.1 No such user" }) });
    await send(relay.port, "", ["bad@dest.test"], "Subject: a bounce itself\r\n\r\nx\r\n");
    await relay.waitForLog((l) => l.msg === "recipient failed");
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(sink.messages).toHaveLength(0);
    expect(relay.count("bounce queued")).toBe(0);
  }, 30_000);
});

describe("LMTP next hop", () => {
  test("per-recipient answers after DATA: one delivered, one deferred then delivered", async () => {
    const { sink, relay } = await setup({ lmtp: (a, n) => (a === "b@dest.test" && n === 1 ? { code: 452, message: "4.2.2 Over quota" } : undefined) });
    await send(relay.port, "alice@origin.test", ["a@dest.test", "b@dest.test"], "Subject: lmtp\r\n\r\nx\r\n");
    await waitFor(() => sink.messages.length === 2, 10_000, "both deliveries");
    expect(sink.messages.map((m) => m.to)).toEqual([["a@dest.test"], ["b@dest.test"]]);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
  }, 30_000);
});
