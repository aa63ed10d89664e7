// Benchmark knobs, read once from the environment. Every loop in the benchmark is bounded by
// a count from here AND by a wall-time limit.

function num(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new Error(`${name}=${raw}: expected a number from ${min} to ${max}`);
  }
  return Math.floor(n);
}

export interface Knobs {
  /** Messages per workload (a) and (b). */
  readonly messages: number;
  /** Concurrent sessions of workload (a), one connection per message. */
  readonly sessions: number;
  /** Persistent sessions of workload (b). */
  readonly persistentSessions: number;
  /** Message size in bytes (headers + body, before the relay's Received: line). */
  readonly size: number;
  /** Idle connections held open to measure memory per connection (0 skips). */
  readonly idleConns: number;
  /** Warm-up messages before the measured workloads (not counted). */
  readonly warmup: number;
  /** Wall-time limit of each workload's sending phase, seconds. */
  readonly timeLimitS: number;
  /** Wall-time limit to wait for the sink to count everything accepted, seconds. */
  readonly drainLimitS: number;
  /** "smtp-sink" (Postfix's, default when installed) or "smtp-server" (in-process, counting). */
  readonly sink: "auto" | "smtp-sink" | "smtp-server";
  /** Keep the temp dir (config, relay log, queue) after the run. */
  readonly keep: boolean;
  /** Also run the workloads with DNS lists and greylisting on (DEFENSES=0 skips it). */
  readonly defenses: boolean;
  /** Also write the results as JSON to this path. */
  readonly jsonOut: string | null;
  /** The "under attack" workload (ATTACK=0 skips it): normal messages per phase, and the attacker's message. */
  readonly attack: { readonly messages: number; readonly signatures: number; readonly bodyBytes: number; readonly rounds: number } | null;
  /** Sustained-load rates, messages per minute (each run on a fresh relay with the defenses on). */
  readonly sustainedRates: readonly number[];
  /** Seconds each sustained rate runs (0 skips the sustained workload). */
  readonly sustainedS: number;
  /** Messages per cluster workload (one node local, one node with Redis, two nodes sharing it); 0 skips it (CLUSTER_MESSAGES). */
  readonly clusterMessages: number;
  /** Run only these parts: throughput (a, b), defenses, attack, idle, sustained, cluster; null runs them all. */
  readonly only: ReadonlySet<string> | null;
}

const PARTS = ["throughput", "defenses", "attack", "idle", "sustained", "cluster"];

function list(name: string, fallback: string, parse: (item: string) => number | string | null): (number | string)[] {
  const raw = process.env[name]?.trim() || fallback;
  return raw.split(",").map((item) => {
    const v = parse(item.trim());
    if (v === null) throw new Error(`${name}=${raw}: "${item}" is not valid`);
    return v;
  });
}

export function readKnobs(): Knobs {
  const sink = process.env.SINK ?? "auto";
  if (sink !== "auto" && sink !== "smtp-sink" && sink !== "smtp-server") throw new Error(`SINK=${sink}: expected smtp-sink, smtp-server or auto`);
  return {
    messages: num("MESSAGES", 20_000, 1, 10_000_000),
    sessions: num("SESSIONS", 20, 1, 5_000),
    persistentSessions: num("PERSISTENT_SESSIONS", 100, 1, 5_000),
    size: num("SIZE", 4096, 256, 50 * 1024 * 1024),
    idleConns: num("IDLE_CONNS", 2000, 0, 100_000),
    warmup: num("WARMUP", 500, 0, 1_000_000),
    timeLimitS: num("TIME_LIMIT_S", 45, 1, 3600),
    drainLimitS: num("DRAIN_LIMIT_S", 60, 1, 3600),
    sink,
    keep: process.env.KEEP === "1",
    defenses: process.env.DEFENSES !== "0",
    jsonOut: process.env.JSON_OUT && process.env.JSON_OUT.trim() !== "" ? process.env.JSON_OUT : null,
    attack:
      process.env.ATTACK === "0"
        ? null
        : {
            messages: num("ATTACK_MESSAGES", 5000, 1, 10_000_000),
            signatures: num("ATTACK_SIGNATURES", 1000, 1, 100_000),
            bodyBytes: num("ATTACK_BODY", 2 * 1024 * 1024, 0, 50 * 1024 * 1024),
            rounds: num("ATTACK_ROUNDS", 3, 1, 20),
          },
    sustainedRates: list("SUSTAINED_RATES", "1000,10000", (i) => (/^\d+$/.test(i) && Number(i) >= 1 && Number(i) <= 1_000_000 ? Number(i) : null)) as number[],
    sustainedS: num("SUSTAINED_S", 60, 0, 86_400),
    clusterMessages: num("CLUSTER_MESSAGES", 10_000, 0, 10_000_000),
    only: process.env.ONLY?.trim() ? new Set(list("ONLY", "", (i) => (PARTS.includes(i) ? i : null)) as string[]) : null,
  };
}
