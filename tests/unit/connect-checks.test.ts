// Connect-stage checks with injected clocks: the connection rate (src/checks/connect/connection-rate.ts)
// and the blocklist, static and in policy.db (src/checks/connect/blocklist.ts).

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Verdict } from "../../src/verdict.ts";
import { blocklistCheck } from "../../src/checks/connect/blocklist.ts";
import { connectionRateCheck } from "../../src/checks/connect/connection-rate.ts";
import { buckets } from "../../src/checks/envelope/rate-limit.ts";
import { LocalState } from "../../src/state/local.ts";
import { parseCidr, type Cidr } from "../../src/net/cidr.ts";
import { PolicyStore } from "../../src/policy/store.ts";

const T0 = Date.UTC(2024, 2, 5, 12);
const ACCEPT: Verdict = { kind: "accept" };
const ctx = (ip: string, trusted = false) => ({ ip, port: 40000, trusted });
const stateRoot = mkdtempSync(join(tmpdir(), "mailraven-connect-"));
afterAll(() => rmSync(stateRoot, { recursive: true, force: true }));
/** The node's own policy state, as a single relay runs it. */
const localState = () => {
  const b = buckets();
  return new LocalState(PolicyStore.open(mkdtempSync(join(stateRoot, "state-"))), () => b);
};

describe("connection rate", () => {
  const tooMany = (ip: string): Verdict => ({
    kind: "defer",
    code: 421,
    status: "4.7.0",
    text: `Too many connections from [${ip}], slow down and try again later`,
    reason: "connection rate",
  });

  function setup(perMinute: number) {
    let t = T0;
    const check = connectionRateCheck(perMinute, localState(), () => t);
    return { check, at: (ms: number) => (t = T0 + ms) };
  }

  test("up to perMinute connections are accepted, the next gets 421 4.7.0", () => {
    const { check } = setup(2);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
  });

  test("the window is one minute from the first connection; then the count starts over", () => {
    const { check, at } = setup(2);
    check(ctx("192.0.2.1"));
    at(30_000);
    check(ctx("192.0.2.1"));
    at(59_999);
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
    at(60_000);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
  });

  test("each client IP is counted on its own", () => {
    const { check } = setup(1);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.2"))).toEqual(ACCEPT);
    expect(check(ctx("2001:db8::1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
    expect(check(ctx("192.0.2.2"))).toEqual(tooMany("192.0.2.2"));
  });

  test("trusted clients are neither limited nor counted", () => {
    const { check } = setup(1);
    for (let i = 0; i < 5; i++) expect(check(ctx("192.0.2.1", true))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(check(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
  });

  test("the counters are shared by checks built on them (a configuration reload keeps them)", () => {
    const counts = localState();
    const now = () => T0;
    expect(connectionRateCheck(1, counts, now)(ctx("192.0.2.1"))).toEqual(ACCEPT);
    expect(connectionRateCheck(1, counts, now)(ctx("192.0.2.1"))).toEqual(tooMany("192.0.2.1"));
  });
});

describe("blocklist", () => {
  const root = mkdtempSync(join(tmpdir(), "mailraven-blocklist-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const cidrs = (...list: string[]): Cidr[] => list.map((c) => parseCidr(c)!);
  const blocked = (ip: string): Verdict => ({ kind: "reject", code: 554, status: "5.7.1", text: `Service unavailable; client [${ip}] is blocked`, reason: "blocklist" });

  function setup(staticList: Cidr[] = []) {
    const store = PolicyStore.open(mkdtempSync(join(root, "state-")));
    let t = T0;
    const b = buckets();
    const check = blocklistCheck(staticList, new LocalState(store, () => b), () => t);
    return { store, check, at: (ms: number) => (t = T0 + ms) };
  }

  test("static networks from the configuration, IPv4 (also IPv4-mapped) and IPv6", () => {
    const { check, store } = setup(cidrs("192.0.2.0/24", "203.0.113.7", "2001:db8::/32"));
    expect(check(ctx("192.0.2.9"))).toEqual(blocked("192.0.2.9"));
    expect(check(ctx("::ffff:192.0.2.9"))).toEqual(blocked("::ffff:192.0.2.9"));
    expect(check(ctx("203.0.113.7"))).toEqual(blocked("203.0.113.7"));
    expect(check(ctx("2001:db8:1::5"))).toEqual(blocked("2001:db8:1::5"));
    expect(check(ctx("203.0.113.8"))).toEqual(ACCEPT);
    expect(check(ctx("198.51.100.1"))).toEqual(ACCEPT);
    expect(check(ctx("2001:db9::5"))).toEqual(ACCEPT);
    store.close();
  });

  test("entries in policy.db apply until they expire", () => {
    const { check, store, at } = setup();
    store.block("198.51.100.0/28", "brute force", T0, T0 + 3_600_000);
    store.block("2001:db8:bad::/48", "abuse", T0, null);
    expect(check(ctx("198.51.100.5"))).toEqual(blocked("198.51.100.5"));
    expect(check(ctx("198.51.100.16"))).toEqual(ACCEPT);
    expect(check(ctx("2001:db8:bad::1"))).toEqual(blocked("2001:db8:bad::1"));
    at(3_600_000 - 1);
    expect(check(ctx("198.51.100.5"))).toEqual(blocked("198.51.100.5"));
    at(3_600_000);
    expect(check(ctx("198.51.100.5"))).toEqual(ACCEPT);
    at(365 * 86_400_000);
    expect(check(ctx("2001:db8:bad::1"))).toEqual(blocked("2001:db8:bad::1"));
    store.close();
  });

  test("an entry added or removed at run time takes effect on the next connection", () => {
    const { check, store } = setup();
    expect(check(ctx("198.51.100.5"))).toEqual(ACCEPT);
    store.block("198.51.100.5", "manual", T0, null);
    expect(check(ctx("198.51.100.5"))).toEqual(blocked("198.51.100.5"));
    store.unblock("198.51.100.5");
    expect(check(ctx("198.51.100.5"))).toEqual(ACCEPT);
    store.close();
  });

  test("trusted clients are never blocked", () => {
    const { check, store } = setup(cidrs("10.0.0.0/8"));
    store.block("10.1.0.0/16", "oops", T0, null);
    expect(check(ctx("10.1.2.3", true))).toEqual(ACCEPT);
    expect(check(ctx("10.1.2.3"))).toEqual(blocked("10.1.2.3"));
    store.close();
  });
});
