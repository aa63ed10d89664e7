// Message rate limits at MAIL FROM (src/checks/envelope/rate-limit.ts): token buckets per
// client IP and per sender domain, with an injected clock.

import { describe, expect, test } from "bun:test";
import type { Verdict } from "../../src/verdict.ts";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buckets, rateLimitCheck } from "../../src/checks/envelope/rate-limit.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { LocalState } from "../../src/state/local.ts";
import type { RateLimit } from "../../src/config/types.ts";
import { parseMailbox } from "../../src/smtp/address.ts";

const T0 = Date.UTC(2024, 2, 5, 12);
const ACCEPT: Verdict = { kind: "accept" };
const ipLimited = (ip: string): Verdict => ({ kind: "defer", code: 450, status: "4.7.1", text: `Rate limit exceeded for [${ip}], try again later`, reason: "rate limit ip" });
const domainLimited = (d: string): Verdict => ({
  kind: "defer",
  code: 450,
  status: "4.7.1",
  text: `Rate limit exceeded for sender domain ${d}, try again later`,
  reason: "rate limit sender domain",
});

function setup(limits: { perIp?: RateLimit; perSenderDomain?: RateLimit }) {
  let t = T0;
  const b = buckets();
  const state = new LocalState(PolicyStore.open(mkdtempSync(join(tmpdir(), "mailraven-rate-"))), () => b);
  const check = rateLimitCheck({ perIp: limits.perIp ?? null, perSenderDomain: limits.perSenderDomain ?? null }, state, () => t);
  // The node's own state answers synchronously: no promise on a single node's message path.
  const mail = (ip: string, sender: string | null, trusted = false) =>
    check({
      client: { ip, port: 40000, hostname: `[${ip}]`, helo: "client.example", secure: false, user: null, trusted },
      sender: sender === null ? null : parseMailbox(sender)!,
    }) as Verdict;
  /** How many of `n` MAIL commands from `ip` are accepted right now. */
  const accepted = (n: number, ip: string, sender: string | null = "a@sender.example") =>
    Array.from({ length: n }, () => mail(ip, sender)).filter((v) => v.kind === "accept").length;
  return { mail, accepted, at: (ms: number) => (t = T0 + ms) };
}

describe("per client IP", () => {
  test("a burst of up to `messages` is accepted, the next is deferred with 450 4.7.1", () => {
    const r = setup({ perIp: { messages: 3, windowMs: 60_000 } });
    expect(r.mail("192.0.2.1", "a@sender.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.1", "a@sender.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.1", "a@sender.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.1", "a@sender.example")).toEqual(ipLimited("192.0.2.1"));
    expect(r.mail("192.0.2.1", null)).toEqual(ipLimited("192.0.2.1"));
  });

  test("the bucket refills at messages/window: one token every 20 s for 3/1m", () => {
    const r = setup({ perIp: { messages: 3, windowMs: 60_000 } });
    expect(r.accepted(3, "192.0.2.1")).toBe(3);
    r.at(19_000);
    expect(r.accepted(1, "192.0.2.1")).toBe(0);
    r.at(20_500);
    expect(r.accepted(2, "192.0.2.1")).toBe(1);
    r.at(60_000);
    expect(r.accepted(3, "192.0.2.1")).toBe(2);
  });

  test("a long pause refills no more than `messages`", () => {
    const r = setup({ perIp: { messages: 3, windowMs: 60_000 } });
    expect(r.accepted(3, "192.0.2.1")).toBe(3);
    r.at(24 * 3_600_000);
    expect(r.accepted(10, "192.0.2.1")).toBe(3);
  });

  test("deferred attempts do not push the refill back", () => {
    const r = setup({ perIp: { messages: 1, windowMs: 10_000 } });
    expect(r.accepted(1, "192.0.2.1")).toBe(1);
    for (let s = 1; s < 10; s++) {
      r.at(s * 1000);
      expect(r.accepted(1, "192.0.2.1")).toBe(0);
    }
    // (+1 ms: the refill is floating point, and ten additions of 0.1 token fall a hair short of 1.)
    r.at(10_001);
    expect(r.accepted(1, "192.0.2.1")).toBe(1);
  });

  test("each IP has its own bucket", () => {
    const r = setup({ perIp: { messages: 2, windowMs: 3_600_000 } });
    expect(r.accepted(5, "192.0.2.1")).toBe(2);
    expect(r.accepted(5, "192.0.2.2")).toBe(2);
    expect(r.accepted(5, "2001:db8::1")).toBe(2);
  });
});

describe("per sender domain", () => {
  test("counted across client IPs; other domains are independent", () => {
    const r = setup({ perSenderDomain: { messages: 2, windowMs: 3_600_000 } });
    expect(r.mail("192.0.2.1", "a@bulk.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.2", "b@Bulk.Example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.3", "c@bulk.example")).toEqual(domainLimited("bulk.example"));
    expect(r.mail("192.0.2.3", "c@other.example")).toEqual(ACCEPT);
  });

  test("refills over the window", () => {
    const r = setup({ perSenderDomain: { messages: 2, windowMs: 3_600_000 } });
    expect(r.accepted(3, "192.0.2.1", "a@bulk.example")).toBe(2);
    r.at(1_799_000);
    expect(r.accepted(1, "192.0.2.1", "a@bulk.example")).toBe(0);
    r.at(1_800_001);
    expect(r.accepted(3, "192.0.2.1", "a@bulk.example")).toBe(1);
  });

  test("the null sender is not counted against any domain", () => {
    const r = setup({ perSenderDomain: { messages: 1, windowMs: 3_600_000 } });
    expect(r.accepted(20, "192.0.2.1", null)).toBe(20);
    expect(r.mail("192.0.2.1", "a@bulk.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.1", "a@bulk.example")).toEqual(domainLimited("bulk.example"));
  });

  test("with both limits the IP limit is checked first and the domain bucket keeps its tokens", () => {
    const r = setup({ perIp: { messages: 1, windowMs: 3_600_000 }, perSenderDomain: { messages: 2, windowMs: 3_600_000 } });
    expect(r.mail("192.0.2.1", "a@bulk.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.1", "a@bulk.example")).toEqual(ipLimited("192.0.2.1"));
    expect(r.mail("192.0.2.2", "a@bulk.example")).toEqual(ACCEPT);
    expect(r.mail("192.0.2.3", "a@bulk.example")).toEqual(domainLimited("bulk.example"));
  });
});

describe("trusted clients", () => {
  test("are not limited and use up no tokens", () => {
    const r = setup({ perIp: { messages: 1, windowMs: 3_600_000 }, perSenderDomain: { messages: 1, windowMs: 3_600_000 } });
    for (let i = 0; i < 10; i++) expect(r.mail("10.0.0.1", "a@bulk.example", true)).toEqual(ACCEPT);
    expect(r.mail("10.0.0.1", "a@bulk.example")).toEqual(ACCEPT);
    expect(r.mail("10.0.0.1", "a@bulk.example")).toEqual(ipLimited("10.0.0.1"));
  });
});
