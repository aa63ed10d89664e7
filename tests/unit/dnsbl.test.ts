// Weighted DNS lists (src/checks/connect/dnsbl.ts) with the real resolver against dnsmasq.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Verdict } from "../../src/verdict.ts";
import { dnsblCache, dnsblCheck, matches, type DnsblCache } from "../../src/checks/connect/dnsbl.ts";
import { parseZone } from "../../src/config/defenses.ts";
import type { DnsblZone } from "../../src/config/types.ts";
import { DnsError, Resolver } from "../../src/dns/resolver.ts";
import { BlackholeDns, DnsServer } from "../helpers/dns.ts";

const zone = (spec: string): DnsblZone => {
  const z = parseZone(spec);
  if (!z) throw new Error(`test setup: bad zone ${spec}`);
  return z;
};

const ZEN = zone("zen.test=127.0.0.[2..11]*3");
const WL = zone("wl.test=127.0.[0..255].[1..3]*-2");
const WEAK = zone("weak.test");
const WEAK2 = zone("weak2.test*2");
const ZONES = [ZEN, WL, WEAK, WEAK2];
const V6_NIBBLES = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"; // 2001:db8::1

let dns: DnsServer;
let blackhole: BlackholeDns;

beforeAll(async () => {
  dns = await DnsServer.start({
    a: {
      "1.2.0.192.zen.test": "127.0.0.2", // 3: exactly the threshold
      "2.2.0.192.weak.test": "127.0.0.2", // 1 ...
      "2.2.0.192.weak2.test": "127.0.0.2", // ... + 2 = 3
      "3.2.0.192.zen.test": "127.0.0.4", // 3 ...
      "3.2.0.192.wl.test": "127.0.5.2", // ... - 2 = 1
      "4.2.0.192.zen.test": "127.0.0.200", // outside the filter: not a hit
      "5.2.0.192.weak.test": "127.0.0.2", // 1
      "7.2.0.192.zen.test": "127.0.0.11", // 3 ...
      "7.2.0.192.weak2.test": "127.0.0.2", // ... + 2 = 5
      "50.2.0.192.zen.test": "127.0.0.2",
      "60.2.0.192.zen.test": "127.0.0.2",
      [`${V6_NIBBLES}.zen.test`]: "127.0.0.2",
    },
  });
  blackhole = await BlackholeDns.start();
});
afterAll(async () => {
  await dns.stop();
  await blackhole.stop();
});

/** Waits (up to 2 s) for `cond`: dnsmasq writes its query log a moment after it answers. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${cond}`);
    await Bun.sleep(10);
  }
}

interface Setup {
  zones?: readonly DnsblZone[];
  threshold?: number;
  negativeTtlMs?: number;
  cache?: DnsblCache;
  servers?: { host: string; port: number }[];
  timeoutMs?: number;
}

function setup(s: Setup = {}) {
  const results: [string, string, string | undefined][] = [];
  const cache = s.cache ?? dnsblCache();
  const resolver = new Resolver({ servers: s.servers ?? [{ host: "127.0.0.1", port: dns.port }], timeoutMs: s.timeoutMs ?? 1000, attempts: 1 });
  const check = dnsblCheck(
    { zones: s.zones ?? ZONES, threshold: s.threshold ?? 3, negativeTtlMs: s.negativeTtlMs ?? 300_000 },
    { resolver, cache, onResult: (z, result, err) => results.push([z, result, (err as DnsError | undefined)?.code]) },
  );
  const run = (ip: string, trusted = false) => check({ ip, port: 40000, trusted });
  return { run, results, cache };
}

const blocked = (ip: string, zoneName: string): Verdict => ({
  kind: "reject",
  code: 554,
  status: "5.7.1",
  text: `Service unavailable; client [${ip}] blocked using ${zoneName}`,
  reason: `dnsbl ${zoneName}`,
});
const ACCEPT: Verdict = { kind: "accept" };

describe("matches (the answer filter)", () => {
  test("no filter: any answer is a hit", () => {
    expect(matches(WEAK, "127.0.0.2")).toBe(true);
    expect(matches(WEAK, "10.1.2.3")).toBe(true);
  });

  test("each octet must be inside its range", () => {
    expect(matches(ZEN, "127.0.0.2")).toBe(true);
    expect(matches(ZEN, "127.0.0.11")).toBe(true);
    expect(matches(ZEN, "127.0.0.1")).toBe(false);
    expect(matches(ZEN, "127.0.0.12")).toBe(false);
    expect(matches(ZEN, "127.0.1.2")).toBe(false);
    expect(matches(WL, "127.0.255.3")).toBe(true);
    expect(matches(WL, "127.0.9.0")).toBe(false);
  });

  test("an answer that is not an IPv4 address never matches a filter", () => {
    expect(matches(ZEN, "::1")).toBe(false);
    expect(matches(ZEN, "127.0.0")).toBe(false);
  });
});

describe("weights and the threshold", () => {
  test("a score equal to the threshold rejects, naming the zone", async () => {
    const { run, results } = setup();
    expect(await run("192.0.2.1")).toEqual(blocked("192.0.2.1", "zen.test"));
    expect(results.toSorted()).toEqual([
      ["weak.test", "clean", undefined],
      ["weak2.test", "clean", undefined],
      ["wl.test", "clean", undefined],
      ["zen.test", "listed", undefined],
    ]);
  });

  test("one below the threshold is accepted", async () => {
    const { run } = setup({ threshold: 4 });
    expect(await run("192.0.2.1")).toEqual(ACCEPT);
  });

  test("weights of several listing zones add up; the reply names the heaviest", async () => {
    const { run } = setup();
    expect(await run("192.0.2.2")).toEqual(blocked("192.0.2.2", "weak2.test")); // 1 + 2
    expect(await run("192.0.2.7")).toEqual(blocked("192.0.2.7", "zen.test")); // 3 + 2
  });

  test("an allowlist's negative weight pulls the score below the threshold", async () => {
    const { run, results } = setup();
    expect(await run("192.0.2.3")).toEqual(ACCEPT); // 3 - 2
    expect(results.filter(([, r]) => r === "listed").map(([z]) => z).toSorted()).toEqual(["wl.test", "zen.test"]);
    // Without the allowlist the same client is refused.
    expect(await setup({ zones: [ZEN, WEAK, WEAK2] }).run("192.0.2.3")).toEqual(blocked("192.0.2.3", "zen.test"));
  });

  test("an answer outside the zone's filter is not a hit", async () => {
    const { run, results } = setup();
    expect(await run("192.0.2.4")).toEqual(ACCEPT);
    expect(results.find(([z]) => z === "zen.test")).toEqual(["zen.test", "clean", undefined]);
  });

  test("a single weak listing: accepted at threshold 3, refused at threshold 1", async () => {
    expect(await setup().run("192.0.2.5")).toEqual(ACCEPT);
    expect(await setup({ threshold: 1 }).run("192.0.2.5")).toEqual(blocked("192.0.2.5", "weak.test"));
  });

  test("a client no list knows is accepted and every zone reported clean", async () => {
    const { run, results } = setup();
    expect(await run("192.0.2.6")).toEqual(ACCEPT);
    expect(results.map(([, r]) => r)).toEqual(["clean", "clean", "clean", "clean"]);
  });
});

describe("addresses", () => {
  test("an IPv6 client is looked up by its reversed nibbles", async () => {
    const { run } = setup();
    expect(await run("2001:db8::1")).toEqual(blocked("2001:db8::1", "zen.test"));
    await until(() => dns.queries(`${V6_NIBBLES}.zen.test`) === 1);
  });

  test("an IPv4-mapped client is looked up as IPv4", async () => {
    expect(await setup().run("::ffff:192.0.2.1")).toEqual(blocked("::ffff:192.0.2.1", "zen.test"));
  });
});

describe("trusted clients", () => {
  test("are not looked up at all", async () => {
    const { run, results } = setup();
    expect(await run("192.0.2.50", true)).toEqual(ACCEPT);
    await Bun.sleep(100);
    for (const z of ZONES) expect([z.zone, dns.queries(`50.2.0.192.${z.zone}`)]).toEqual([z.zone, 0]);
    expect(results).toEqual([]);
    // The same address untrusted is listed, and the query is seen.
    expect(await run("192.0.2.50")).toEqual(blocked("192.0.2.50", "zen.test"));
    await until(() => dns.queries("50.2.0.192.zen.test") === 1);
  });
});

describe("the cache", () => {
  test("a listed answer is cached for its TTL: no second query", async () => {
    const { run, cache } = setup({ zones: [ZEN] });
    expect(await run("192.0.2.60")).toEqual(blocked("192.0.2.60", "zen.test"));
    await until(() => dns.queries("60.2.0.192.zen.test") === 1);
    expect(await run("192.0.2.60")).toEqual(blocked("192.0.2.60", "zen.test"));
    await Bun.sleep(100);
    expect(dns.queries("60.2.0.192.zen.test")).toBe(1);
    // dnsmasq answers with a TTL of 60 s.
    const ttl = cache.getRemainingTTL("60.2.0.192.zen.test");
    expect(ttl).toBeGreaterThan(55_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  test("NXDOMAIN is cached for negative_ttl, then asked again", async () => {
    const { run, cache } = setup({ zones: [ZEN], negativeTtlMs: 500 });
    const name = "61.2.0.192.zen.test";
    const started = performance.now();
    expect(await run("192.0.2.61")).toEqual(ACCEPT);
    expect(await run("192.0.2.61")).toEqual(ACCEPT);
    expect(cache.get(name)).toEqual({ addresses: [] });
    expect(cache.getRemainingTTL(name)).toBeLessThanOrEqual(500);
    await until(() => dns.queries(name) === 1);
    await Bun.sleep(100);
    expect(dns.queries(name)).toBe(1);
    await Bun.sleep(Math.max(0, 550 - (performance.now() - started)));
    expect(await run("192.0.2.61")).toEqual(ACCEPT);
    await until(() => dns.queries(name) === 2);
  });

  test("the cache is shared by checks built on it (a configuration reload keeps it)", async () => {
    const cache = dnsblCache();
    expect(await setup({ zones: [ZEN], cache }).run("192.0.2.62")).toEqual(ACCEPT);
    await until(() => dns.queries("62.2.0.192.zen.test") === 1);
    expect(await setup({ zones: [ZEN], cache }).run("192.0.2.62")).toEqual(ACCEPT);
    await Bun.sleep(100);
    expect(dns.queries("62.2.0.192.zen.test")).toBe(1);
  });
});

describe("DNS failures fail open", () => {
  test("a timeout is reported as an error and the client accepted; nothing is cached", async () => {
    const { run, results, cache } = setup({ zones: [ZEN, WEAK], servers: [{ host: "127.0.0.1", port: blackhole.port }], timeoutMs: 100, threshold: 1 });
    expect(await run("192.0.2.1")).toEqual(ACCEPT);
    expect(results.toSorted()).toEqual([
      ["weak.test", "error", "ETIMEOUT"],
      ["zen.test", "error", "ETIMEOUT"],
    ]);
    expect(cache.size).toBe(0);
  });

  test("a failing zone counts as not listed while the others still count", async () => {
    // dnsmasq refuses names outside .test.
    const broken = zone("broken.example*5");
    const { run, results } = setup({ zones: [ZEN, broken] });
    expect(await run("192.0.2.1")).toEqual(blocked("192.0.2.1", "zen.test"));
    expect(results.find(([z]) => z === "broken.example")).toEqual(["broken.example", "error", "EREFUSED"]);
    expect(await run("192.0.2.6")).toEqual(ACCEPT);
  });
});
