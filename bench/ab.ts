// `bun bench/ab.ts A_BINARY B_BINARY [rounds]`: runs `bun run bench` on two builds alternately
// (A, B, A, B, ...; the host is shared, so a build is never measured in one block of time) and
// prints, per workload, the median over the rounds of each figure and the median of the
// per-round ratios B / A. Every other knob of bench/run.ts passes through the environment; the
// defaults here are lighter: MESSAGES=6000 ONLY=throughput (workloads a and b).

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fmt, percentile, sortedCopy, table } from "./lib/stats.ts";

interface Workload {
  name: string;
  acceptRate: number;
  p99: number | null;
  e2eSeconds: number | null;
  accepted: number;
  cpuMsPerMsg: number | null;
  mainMsPerMsg: number | null;
  deliveryMsPerMsg: number | null;
  machineBusyPct: number;
}

const [a, b, roundsArg] = process.argv.slice(2);
if (!a || !b) {
  console.error("usage: bun bench/ab.ts A_BINARY B_BINARY [rounds (default 3)]");
  process.exit(2);
}
const rounds = Number(roundsArg ?? 3);
const dir = mkdtempSync(join(tmpdir(), "mailraven-ab-"));
const env = { MESSAGES: "6000", ONLY: "throughput", ...process.env };
const results: Record<"A" | "B", Workload[][]> = { A: [], B: [] };

try {
  for (let r = 0; r < rounds; r++) {
    for (const [label, bin] of [["A", a], ["B", b]] as const) {
      const out = join(dir, `${label}-${r}.json`);
      const load = readFileSync("/proc/loadavg", "latin1").split(" ").slice(0, 3).join(" ");
      console.log(`round ${r + 1}/${rounds}: ${label} (${bin}), load average ${load}`);
      const proc = Bun.spawn(["bun", resolve(import.meta.dir, "run.ts")], { env: { ...env, MAILRAVEN_BIN: resolve(bin), JSON_OUT: out }, stdout: "ignore", stderr: "inherit" });
      if ((await proc.exited) !== 0) console.log(`  (exit ${proc.exitCode}: a workload was incomplete)`);
      results[label].push((JSON.parse(readFileSync(out, "utf8")) as { workloads: Workload[] }).workloads);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const median = (xs: (number | null)[]) => percentile(sortedCopy(Float64Array.from(xs.filter((x): x is number => x !== null && Number.isFinite(x)))), 50);
const figures: [string, (w: Workload) => number | null, number][] = [
  ["accepted msg/s", (w) => w.acceptRate, 1],
  ["end-to-end msg/s", (w) => (w.e2eSeconds ? w.accepted / w.e2eSeconds : null), 1],
  ["latency p99 ms", (w) => w.p99, 2],
  ["relay CPU ms/msg", (w) => w.cpuMsPerMsg, 3],
  ["  SMTP (main) thread", (w) => w.mainMsPerMsg, 3],
  ["  delivery thread", (w) => w.deliveryMsPerMsg, 3],
  ["machine busy %", (w) => w.machineBusyPct, 0],
];
for (let i = 0; i < results.A[0]!.length; i++) {
  const rows = figures.map(([label, f, digits]) => {
    const av = results.A.map((ws) => f(ws[i]!));
    const bv = results.B.map((ws) => f(ws[i]!));
    const ratios = av.map((x, r) => (x && bv[r] !== null ? bv[r]! / x : null));
    return [label, fmt(median(av), digits), fmt(median(bv), digits), fmt(median(ratios), 2)];
  });
  console.log("");
  console.log(table([`${results.A[0]![i]!.name} (median of ${rounds})`, "A", "B", "B / A"], rows));
}
