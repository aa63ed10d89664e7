// The cluster's policy state (src/state/redis.ts) against a real redis-server: atomic buckets
// and counters between two nodes' states, greylist listing and removal, caches (recipient
// verification, pregreet, MTA-STS policies handed from one node to another), and what each
// check does while Redis is away (fallback: local or open).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClusterConfig } from "../../src/config/types.ts";
import { MtaStsPolicies, type FetchPolicy } from "../../src/deliver/mta-sts.ts";
import { createLogger, type LogLevel } from "../../src/log.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { LocalState } from "../../src/state/local.ts";
import { RedisLink } from "../../src/state/redis-link.ts";
import { RedisState } from "../../src/state/redis.ts";
import { buckets } from "../../src/state/token-bucket.ts";
import { RedisServer } from "../helpers/redis.ts";

let redis: RedisServer;
const root = mkdtempSync(join(tmpdir(), "mailraven-redis-state-"));
const open: RedisState[] = [];
let prefixes = 0;

beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(async () => {
  for (const s of open) s.close();
  await redis.stop();
  rmSync(root, { recursive: true, force: true });
});

const T0 = Date.now();
const HOUR = 3_600_000;

/** One node's state: Redis in front of its own policy.db. Two made with one prefix share Redis. */
async function node(prefix: string, opts: { url?: string; fallback?: Partial<ClusterConfig["fallback"]> } = {}) {
  const lines: { level: LogLevel; msg: string }[] = [];
  const log = createLogger("debug", (line, level) => lines.push({ level, msg: (JSON.parse(line) as { msg: string }).msg }));
  const fallbacks: string[] = [];
  const url = opts.url ?? redis.url;
  const cfg = {
    url,
    shownUrl: url,
    caFile: null,
    timeoutMs: 250,
    keyPrefix: prefix,
    refreshIntervalMs: 60_000,
    fallback: { greylist: "local", rate_limits: "local", connection_rate: "local", auth_failures: "local", ...opts.fallback },
  } as const;
  const link = new RedisLink(cfg, log, { fallback: (c) => fallbacks.push(c), state: () => {} });
  const b = buckets();
  const local = new LocalState(PolicyStore.open(mkdtempSync(join(root, "node-"))), () => b);
  const state = new RedisState(cfg, link, local, log);
  await link.start();
  open.push(state);
  return { state, local, link, lines, fallbacks };
}

describe("buckets and counters shared by two nodes", () => {
  test("a bucket of 10 taken by two nodes at once gives out exactly 10 tokens; later buckets of a refused call are untouched", async () => {
    const p = `b${prefixes++}:`;
    const [a, b] = [await node(p), await node(p)];
    const limit = { messages: 10, windowMs: HOUR };
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).state.take([{ key: "ip 192.0.2.1", limit }], T0)));
    expect(results.filter((r) => r === -1).length).toBe(10);
    expect(results.filter((r) => r === 0).length).toBe(20);
    // The first bucket is empty: the second is not touched.
    expect(await a.state.take([{ key: "ip 192.0.2.1", limit }, { key: "domain x.example", limit: { messages: 1, windowMs: HOUR } }], T0)).toBe(0);
    expect(await b.state.take([{ key: "domain x.example", limit: { messages: 1, windowMs: HOUR } }], T0)).toBe(-1);
    expect(Number(await redis.send("PTTL", [`${p}rl:ip 192.0.2.1`]))).toBeGreaterThan(HOUR - 10_000);
  });

  test("a bucket refills at messages/window (server time)", async () => {
    const p = `b${prefixes++}:`;
    const a = await node(p);
    const limit = { messages: 2, windowMs: 400 };
    expect([await a.state.take([{ key: "k", limit }], T0), await a.state.take([{ key: "k", limit }], T0), await a.state.take([{ key: "k", limit }], T0)]).toEqual([-1, -1, 0]);
    await Bun.sleep(250); // 200 ms gives one token back
    expect(await a.state.take([{ key: "k", limit }], T0)).toBe(-1);
  });

  test("connections and AUTH failures are counted over both nodes, in windows that expire", async () => {
    const p = `c${prefixes++}:`;
    const [a, b] = [await node(p), await node(p)];
    expect([await a.state.countConnection("192.0.2.9", T0), await b.state.countConnection("192.0.2.9", T0), await a.state.countConnection("192.0.2.9", T0)]).toEqual([1, 2, 3]);
    expect(Number(await redis.send("PTTL", [`${p}cr:192.0.2.9`]))).toBeLessThanOrEqual(60_000);
    expect([await a.state.countAuthFailure("192.0.2.9", 600_000, T0), await b.state.countAuthFailure("192.0.2.9", 600_000, T0)]).toEqual([1, 2]);
    b.state.clearAuthFailures("192.0.2.9");
    await Bun.sleep(50);
    expect(await a.state.countAuthFailure("192.0.2.9", 600_000, T0)).toBe(1);
  });
});

describe("greylisting in Redis", () => {
  const triplet = (network: string, sender: string, recipient: string, at = T0) => ({ network, sender, recipient, firstSeen: at, passAfter: at + 300_000, expiresAt: at + 4 * HOUR, passes: 0 });

  test("new triplets within the network's budget, lookups from the other node, pass and auto-allowlisting", async () => {
    const p = `g${prefixes++}:`;
    const [a, b] = [await node(p), await node(p)];
    const cap = { key: "greylist-new 192.0.2.0/24", limit: { messages: 2, windowMs: HOUR } };
    expect(await a.state.greylistNew(triplet("192.0.2.0/24", "a@x.example", "r1@example.org"), cap, T0)).toBe(true);
    expect(await b.state.greylistNew(triplet("192.0.2.0/24", "a@x.example", "r2@example.org"), cap, T0)).toBe(true);
    expect(await a.state.greylistNew(triplet("192.0.2.0/24", "a@x.example", "r3@example.org"), cap, T0)).toBe(false);
    expect(await b.state.greylistLookup("192.0.2.0/24", "a@x.example", "r1@example.org", T0, true)).toEqual({ allowed: false, entry: triplet("192.0.2.0/24", "a@x.example", "r1@example.org") });
    expect((await b.state.greylistLookup("192.0.2.0/24", "a@x.example", "r3@example.org", T0, true)).entry).toBeNull();
    // Two first passes of the network allowlist it (auto_allowlist_after: 2); a triplet counts once.
    const until = T0 + 10 * HOUR;
    const pass = (r: string) => ({ ...triplet("192.0.2.0/24", "a@x.example", r), passes: 1, expiresAt: until });
    a.state.greylistPassed(pass("r1@example.org"), { after: 2, until });
    b.state.greylistPassed(pass("r1@example.org"), { after: 2, until });
    await Bun.sleep(50);
    expect((await a.state.greylistLookup("192.0.2.0/24", "", "", T0, false)).allowed).toBe(false);
    b.state.greylistPassed(pass("r2@example.org"), { after: 2, until });
    await Bun.sleep(50);
    expect((await a.state.greylistLookup("192.0.2.0/24", "", "", T0, false)).allowed).toBe(true);
    expect(Number(await redis.send("PTTL", [`${p}gla:192.0.2.0/24`]))).toBeGreaterThan(9 * HOUR);
  });

  test("listing pages in order past expired triplets; removal of one triplet or a network tells both nodes", async () => {
    const p = `g${prefixes++}:`;
    const [a, b] = [await node(p), await node(p)];
    let told = 0;
    a.state.onGreylistChange(() => told++);
    for (const [net, r] of [["192.0.2.0/24", "r1"], ["192.0.2.0/24", "r2"], ["198.51.100.0/24", "r1"], ["192.0.20.0/24", "r1"]] as const) {
      await a.state.greylistNew(triplet(net, "s@x.example", `${r}@example.org`), null, T0);
    }
    // An expired triplet leaves its index member behind until a listing or the sweep drops it.
    await b.state.greylistNew({ ...triplet("192.0.2.0/24", "s@x.example", "gone@example.org"), expiresAt: Date.now() + 20 }, null, T0);
    await Bun.sleep(60);
    const first = await b.state.listGreylist("", 2);
    expect(first.map((e) => `${e.network} ${e.recipient}`)).toEqual(["192.0.2.0/24 r1@example.org", "192.0.2.0/24 r2@example.org"]);
    const rest = await b.state.listGreylist("192.0.2.0/24 s@x.example r2@example.org", 10);
    expect(rest.map((e) => e.network)).toEqual(["192.0.20.0/24", "198.51.100.0/24"]);
    expect(await redis.send("ZSCORE", [`${p}gl:index`, "192.0.2.0/24 s@x.example gone@example.org"])).toBeNull();
    // Removing 192.0.2.0/24 leaves 192.0.20.0/24 alone.
    expect(await b.state.removeGreylist("192.0.2.0/24", null, null)).toBe(2);
    expect(await b.state.removeGreylist("198.51.100.0/24", "s@x.example", "r1@example.org")).toBe(1);
    expect((await a.state.listGreylist("", 10)).map((e) => e.network)).toEqual(["192.0.20.0/24"]);
    await Bun.sleep(100);
    expect(told).toBeGreaterThanOrEqual(2);
  });
});

describe("caches handed between nodes", () => {
  test("recipient verification, pregreet passes (with their TTL) and MTA-STS policies", async () => {
    const p = `k${prefixes++}:`;
    const [a, b] = [await node(p), await node(p)];
    const v = { address: "bob@example.org", status: "ok" as const, reply: "250 ok", checkedAt: T0, refreshAt: Date.now() + HOUR, expiresAt: Date.now() + 2 * HOUR };
    a.state.saveVerify(v);
    a.state.savePregreetPass("192.0.2.5", HOUR);
    await Bun.sleep(50);
    expect(await b.state.verifyEntry("bob@example.org")).toEqual(v);
    expect(await b.state.pregreetPassed("192.0.2.5")).toBe(true);
    // Known to b now: answered from memory, no promise.
    expect(b.state.pregreetPassed("192.0.2.5")).toBe(true);
    expect(await b.state.pregreetPassed("192.0.2.6")).toBe(false);

    const policy = { id: "20240101", mode: "enforce" as const, mx: ["mx.example.org"], maxAge: 86400, expires: new Date(Date.now() + HOUR).toISOString() };
    const seen: unknown[] = [];
    const fetch: FetchPolicy = async (_d, known) => (seen.push(known), { policy, status: "found" });
    await new MtaStsPolicies(fetch, a.state).lookup("example.org", async () => [], 1000);
    await Bun.sleep(50);
    // Node b, which never fetched it, hands the policy to mailauth as the known one.
    await new MtaStsPolicies(fetch, b.state).lookup("example.org", async () => [], 1000);
    expect(seen).toEqual([null, policy]);
  });
});

describe("while Redis does not answer", () => {
  test("local: each check answers from the node's own state at once; open: lets the client through; both counted", async () => {
    const gone = "redis://127.0.0.1:1"; // nothing listens on port 1
    const local = await node(`x${prefixes++}:`, { url: gone });
    const openNode = await node(`x${prefixes++}:`, { url: gone, fallback: { rate_limits: "open", greylist: "open", connection_rate: "open", auth_failures: "open" } });
    expect(local.lines.filter((l) => l.msg.startsWith("redis unreachable")).length).toBe(1);
    const limit = { messages: 1, windowMs: HOUR };
    // Synchronous answers: no promise, no wait.
    expect([local.state.take([{ key: "k", limit }], T0), local.state.take([{ key: "k", limit }], T0)]).toEqual([-1, 0]);
    expect([openNode.state.take([{ key: "k", limit }], T0), openNode.state.take([{ key: "k", limit }], T0)]).toEqual([-1, -1]);
    expect([local.state.countConnection("c", T0), local.state.countConnection("c", T0)]).toEqual([1, 2]);
    expect(openNode.state.countConnection("c", T0)).toBe(0);
    expect(openNode.state.countAuthFailure("c", HOUR, T0)).toBe(0);
    expect(openNode.state.greylistLookup("192.0.2.0/24", "a", "b", T0, true)).toEqual({ allowed: true, entry: null });
    // A block made meanwhile stays on this node, and is enforced here.
    expect(local.state.block("192.0.2.66", "brute force", T0, null)).toMatchObject({ cidr: "192.0.2.66" });
    expect(local.state.blocked("192.0.2.66", T0)).not.toBeNull();
    expect(local.fallbacks).toEqual(["rate_limits", "rate_limits", "connection_rate", "connection_rate", "blocklist"]);
    expect(openNode.fallbacks).toEqual(["rate_limits", "rate_limits", "connection_rate", "auth_failures", "greylist"]);
  });
});
