// The cluster workload: one connection per message through the checks that keep state
// (connection rate, rate limits per IP and sender domain, greylisting), on
//   1. one node with its own state (policy.db and memory),
//   2. one node with that state in a local redis-server,
//   3. two nodes sharing that redis-server, the load split between them,
// so the same run gives the cost of the Redis-backed checks against the local ones, and one
// node against two. On a 2-core machine two nodes, Redis and the load generator share the
// cores: the second node cannot add capacity there, only show what sharing costs.

import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { RedisServer } from "../../tests/helpers/redis.ts";
import type { Knobs } from "./knobs.ts";
import { perConnection, type LoadResult } from "./load.ts";
import { busyPct, cpuMs, cpuStat } from "./proc.ts";
import { freePort, startRelay, type Relay } from "./relay.ts";
import type { Sink } from "./sink.ts";
import { fmt, percentile, sortedCopy, table } from "./stats.ts";

export interface ClusterRow {
  readonly name: string;
  readonly nodes: number;
  readonly accepted: number;
  readonly attempted: number;
  readonly seconds: number;
  readonly acceptRate: number;
  readonly p50: number | null;
  readonly p99: number | null;
  /** Relay processes and redis-server together, per accepted message. */
  readonly cpuMsPerMsg: number | null;
  readonly delivered: boolean;
  readonly machineBusyPct: number;
}

type Say = (msg: string) => void;

export async function measureCluster(k: Knobs, binary: string, dir: string, sink: Sink, payload: Uint8Array, say: Say): Promise<ClusterRow[] | null> {
  let redis: RedisServer;
  try {
    redis = await RedisServer.start();
  } catch (err) {
    say(`cluster run skipped: no redis-server (${err instanceof Error ? err.message : err}); install redis-server`);
    return null;
  }
  try {
    const rows: ClusterRow[] = [];
    rows.push(await setup(k, binary, dir, sink, payload, say, "one node, local state", [null]));
    rows.push(await setup(k, binary, dir, sink, payload, say, "one node, state in Redis", [redis]));
    rows.push(await setup(k, binary, dir, sink, payload, say, "two nodes sharing Redis", [redis, redis]));
    return rows;
  } finally {
    await redis.stop();
  }
}

async function setup(k: Knobs, binary: string, dir: string, sink: Sink, payload: Uint8Array, say: Say, name: string, nodes: (RedisServer | null)[]): Promise<ClusterRow> {
  const tag = name.replace(/\W+/g, "-");
  const relays: Relay[] = [];
  try {
    for (const [i, redis] of nodes.entries()) {
      const port = await freePort();
      relays.push(
        await startRelay(binary, dir, `relay-${tag}-${i}`, {
          port,
          sinkPort: sink.port,
          stateDir: join(dir, `state-${tag}-${i}`),
          maxConnections: k.sessions + 100,
          stateChecks: { redis: redis?.url ?? null, nodeName: `node${i}` },
        }),
      );
    }
    // The benchmark's one triplet is greylisted once, then passes (and is known from then on).
    await perConnection({ port: relays[0]!.port, messages: 1, sessions: 1, payload, deadline: performance.now() + 5000 });
    await new Promise((r) => setTimeout(r, 1100));
    const before = sink.count();
    const warm = await split(relays, Math.max(k.warmup, 100), k.sessions, payload, performance.now() + 30_000);
    if (warm.accepted === 0) throw new Error(`${name}: the warm-up was not accepted: ${relays[0]!.logTail()}`);
    await sink.waitFor(before + warm.accepted, performance.now() + k.drainLimitS * 1000);

    say(`cluster: ${name}: ${k.clusterMessages} messages over ${k.sessions} sessions`);
    const base = sink.count();
    const pids = [...relays.map((r) => r.pid), ...(nodes[0] ? [nodes[0].pid!] : [])];
    const cpu0 = pids.reduce((s, p) => s + cpuMs(p), 0);
    const sys0 = cpuStat();
    const load = await split(relays, k.clusterMessages, k.sessions, payload, performance.now() + k.timeLimitS * 1000);
    const delivered = await sink.waitFor(base + load.accepted, performance.now() + k.drainLimitS * 1000);
    const cpu1 = pids.reduce((s, p) => s + cpuMs(p), 0);
    const sorted = sortedCopy(load.latenciesMs);
    const row: ClusterRow = {
      name,
      nodes: relays.length,
      accepted: load.accepted,
      attempted: load.attempted,
      seconds: load.seconds,
      acceptRate: load.accepted / load.seconds,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      cpuMsPerMsg: load.accepted ? (cpu1 - cpu0) / load.accepted : null,
      delivered,
      machineBusyPct: busyPct(sys0, cpuStat()),
    };
    const errs = [...load.errors].map(([e, n]) => `${e}: ${n}`).join(", ");
    say(`cluster: ${name}: accepted ${load.accepted}/${load.attempted} in ${fmt(load.seconds, 2)} s = ${fmt(row.acceptRate)} msg/s${errs ? `; errors: ${errs}` : ""}`);
    return row;
  } finally {
    for (const r of relays) await r.stop();
  }
}

/** The load divided between the nodes (messages and sessions alike), run at once; one result. */
async function split(relays: readonly Relay[], messages: number, sessions: number, payload: Uint8Array, deadline: number) {
  const n = relays.length;
  const parts: LoadResult[] = await Promise.all(
    relays.map((r, i) => perConnection({ port: r.port, messages: Math.floor(messages / n) + (i < messages % n ? 1 : 0), sessions: Math.max(1, Math.floor(sessions / n)), payload, deadline })),
  );
  const errors = new Map<string, number>();
  for (const p of parts) for (const [e, c] of p.errors) errors.set(e, (errors.get(e) ?? 0) + c);
  return {
    accepted: parts.reduce((s, p) => s + p.accepted, 0),
    attempted: parts.reduce((s, p) => s + p.attempted, 0),
    seconds: Math.max(...parts.map((p) => p.seconds)),
    latenciesMs: Float64Array.from(parts.flatMap((p) => [...p.latenciesMs])),
    errors,
  };
}

export function printCluster(rows: readonly ClusterRow[]): void {
  const [local, redis, two] = rows;
  console.log(
    table(
      ["cluster (connection rate, rate limits, greylisting; one connection per message)", "nodes", "accepted msg/s", "p50 ms", "p99 ms", "CPU ms/msg (relays + redis)", "machine busy %"],
      rows.map((r) => [r.name, String(r.nodes), `${fmt(r.acceptRate)}${r.delivered ? "" : " (not all delivered)"}`, fmt(r.p50, 2), fmt(r.p99, 2), fmt(r.cpuMsPerMsg, 3), fmt(r.machineBusyPct, 0)]),
    ),
  );
  if (local && redis && two) {
    const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? fmt(a / b, 2) : "-");
    console.log(
      table(
        ["ratios, same run", "throughput", "p99", "CPU per message"],
        [
          ["Redis-backed checks / local ones (one node)", ratio(redis.acceptRate, local.acceptRate), ratio(redis.p99, local.p99), ratio(redis.cpuMsPerMsg, local.cpuMsPerMsg)],
          ["two nodes / one node (both on Redis)", ratio(two.acceptRate, redis.acceptRate), ratio(two.p99, redis.p99), ratio(two.cpuMsPerMsg, redis.cpuMsPerMsg)],
        ],
      ),
    );
  }
  console.log("");
}
