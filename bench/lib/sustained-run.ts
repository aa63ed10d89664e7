// Runs the sustained-load workload at each configured rate, each on a fresh relay with the
// example defenses on (DNS lists answered by a local dnsmasq, greylisting with the load
// source allowlisted), and prints one table: accept latency percentiles against the 500 ms
// target, refusals, deliveries, CPU, and memory drift.

import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { DnsServer } from "../../tests/helpers/dns.ts";
import type { Knobs } from "./knobs.ts";
import { perConnection } from "./load.ts";
import { cpuMs } from "./proc.ts";
import { freePort, startRelay } from "./relay.ts";
import type { Sink } from "./sink.ts";
import { fmt, percentile, sortedCopy, table } from "./stats.ts";
import { rssDrift, sustained, type SustainedResult } from "./sustained.ts";

/** The P99 accept latency the sustained runs are held to (issue 13). */
export const P99_TARGET_MS = 500;

export interface SustainedReport {
  readonly result: SustainedResult;
  readonly delivered: number;
  readonly cpuPct: number;
  readonly queuedAfterStop: number | null;
}

/** 249 loopback client addresses, 127.0.0.2 to 127.0.0.250: each new one costs its DNS list lookups once. */
const SOURCES = Array.from({ length: 249 }, (_, i) => `127.0.0.${i + 2}`);

export async function runSustained(k: Knobs, binary: string, dir: string, sink: Sink, payload: Uint8Array, say: (s: string) => void): Promise<SustainedReport[] | null> {
  let dns: DnsServer;
  try {
    dns = await DnsServer.start({});
  } catch (err) {
    say(`sustained run skipped: no DNS server (${err instanceof Error ? err.message : err}); install dnsmasq-base`);
    return null;
  }
  const reports: SustainedReport[] = [];
  try {
    for (const [i, perMinute] of k.sustainedRates.entries()) {
      const port = await freePort();
      const relay = await startRelay(binary, dir, `relay-sustained-${i}`, { port, sinkPort: sink.port, stateDir: join(dir, `state-sustained-${i}`), maxConnections: 2000, defensesDns: dns.address });
      let running = true;
      try {
        const warm = sink.count();
        const w = await perConnection({ port, messages: Math.min(k.warmup, 200), sessions: 10, payload, deadline: performance.now() + 30_000 });
        if (w.accepted === 0 && k.warmup > 0) throw new Error(`the relay accepted nothing in the warm-up: ${relay.logTail()}`);
        await sink.waitFor(warm + w.accepted, performance.now() + k.drainLimitS * 1000);
        say(`sustained: ${perMinute} messages/minute for ${k.sustainedS} s (one connection each, from ${SOURCES.length} addresses; DNS lists and greylisting on)`);
        const base = sink.count();
        const cpu0 = cpuMs(relay.pid);
        const result = await sustained({ port, perMinute, seconds: k.sustainedS, payload, sources: SOURCES, maxInFlight: 1000, relayPid: relay.pid });
        await sink.waitFor(base + result.accepted, performance.now() + k.drainLimitS * 1000);
        const cpuPct = ((cpuMs(relay.pid) - cpu0) / 1000 / result.seconds) * 100;
        const stopped = await relay.stop();
        running = false;
        reports.push({ result, delivered: sink.count() - base, cpuPct, queuedAfterStop: stopped.queued });
        const p99 = percentile(sortedCopy(result.acceptMs), 99);
        say(`sustained ${perMinute}/min: ${result.accepted}/${result.scheduled} accepted, accept p99 ${fmt(p99, 1)} ms, ${[...result.refusals].map(([r, n]) => `${r}: ${n}`).join(", ") || "no refusals"}`);
      } finally {
        if (running) await relay.stop();
      }
    }
  } finally {
    await dns.stop();
  }
  return reports;
}

export function printSustained(reports: readonly SustainedReport[], seconds: number): void {
  const col = (f: (r: SustainedReport) => string) => reports.map(f);
  const sorted = reports.map((r) => ({ accept: sortedCopy(r.result.acceptMs), tx: sortedCopy(r.result.transactionMs) }));
  const mem = reports.map((r) => rssDrift(r.result.rss));
  const rows: string[][] = [
    ["duration, s", ...col((r) => fmt(r.result.seconds, 0))],
    ["messages scheduled / accepted", ...col((r) => `${r.result.scheduled} / ${r.result.accepted}`)],
    ["not started (1000 in flight)", ...col((r) => String(r.result.notStarted))],
    ["refused or failed", ...col((r) => [...r.result.refusals].map(([k, n]) => `${k}: ${n}`).join(", ") || "none")],
    ["delivered to the sink", ...col((r) => String(r.delivered))],
    ["accept latency p50 ms", ...sorted.map((s) => fmt(percentile(s.accept, 50), 2))],
    ["accept latency p99 ms", ...sorted.map((s) => fmt(percentile(s.accept, 99), 2))],
    ["accept latency max ms", ...sorted.map((s) => fmt(s.accept.length ? s.accept[s.accept.length - 1]! : null, 1))],
    [`p99 < ${P99_TARGET_MS} ms`, ...sorted.map((s) => ((percentile(s.accept, 99) ?? Infinity) < P99_TARGET_MS ? "yes" : "NO"))],
    ["whole transaction p99 ms", ...sorted.map((s) => fmt(percentile(s.tx, 99), 1))],
    ["relay CPU % of one core", ...col((r) => fmt(r.cpuPct, 0))],
    ["RSS first → last fifth, MiB", ...mem.map((m) => (m ? `${fmt(m.firstMiB)} → ${fmt(m.lastMiB)}` : "-"))],
    ["memory drift, MiB", ...mem.map((m) => (m ? fmt(m.driftMiB, 1) : "-"))],
    ["peak RSS, MiB", ...mem.map((m) => (m ? fmt(m.peakMiB) : "-"))],
    ["left in the queue after stop", ...col((r) => String(r.queuedAfterStop ?? "-"))],
  ];
  console.log(table([`sustained load (${seconds} s per rate; DNS lists + greylisting)`, ...reports.map((r) => `${r.result.perMinute}/min`)], rows));
  console.log("accept latency: the final dot of DATA to the 250 (durable); whole transaction: scheduled start to that 250 (connect, greeting, EHLO, MAIL, RCPT, DATA).");
  console.log("");
}
