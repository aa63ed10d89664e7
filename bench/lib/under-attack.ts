// Workload (c), "under attack": the per-connection load of (a) on a relay with sender
// authentication on, once alone and once while one untrusted client sends signature-heavy
// messages back to back; a NOOP probe on another session measures the event-loop lag meanwhile.
// The figures that matter are the normal load's ratios: p99 with/without (goal <= 2) and
// throughput with/without (goal >= 0.9). ATTACK_ROUNDS rounds of (without, with) on one relay;
// each round gives its own ratios (a shared host drifts between rounds), reported with their median.

import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { DnsServer } from "../../tests/helpers/dns.ts";
import { attacker, attackMessage, lagProbe, type AttackResult } from "./attack.ts";
import type { Knobs } from "./knobs.ts";
import { perConnection, type LoadResult } from "./load.ts";
import { cpuMs } from "./proc.ts";
import { freePort, startRelay } from "./relay.ts";
import { fmt, percentile, sortedCopy, table } from "./stats.ts";

export interface AttackPhase {
  readonly load: LoadResult;
  readonly acceptRate: number;
  readonly p50: number | null;
  readonly p99: number | null;
  readonly lag: { readonly p50: number | null; readonly p99: number | null; readonly max: number | null; readonly samples: number };
  readonly attack: AttackResult | null;
  readonly relayCpuMs: number;
}

export interface AttackRound {
  readonly without: AttackPhase;
  readonly with: AttackPhase;
  readonly p99Ratio: number | null;
  readonly throughputRatio: number;
}

export interface AttackReport {
  readonly rounds: readonly AttackRound[];
  /** Medians over the rounds. */
  readonly p99Ratio: number | null;
  readonly throughputRatio: number | null;
}

export async function measureUnderAttack(k: Knobs, binary: string, dir: string, sinkPort: number, payload: Uint8Array, say: (m: string) => void): Promise<AttackReport | null> {
  const a = k.attack;
  if (!a) return null;
  let dns: DnsServer;
  try {
    dns = await DnsServer.start({});
  } catch (err) {
    say(`under attack: skipped, no DNS server (${err instanceof Error ? err.message : err}); install dnsmasq-base`);
    return null;
  }
  const port = await freePort();
  const relay = await startRelay(binary, dir, "relay-attack", { port, sinkPort, stateDir: join(dir, "state-attack"), maxConnections: k.sessions + 100, attackDns: dns.address });
  const evil = attackMessage(a.signatures, a.bodyBytes);
  try {
    say(`under attack: mailraven pid ${relay.pid}, sender authentication on; attacker message ${a.signatures} signatures, ${fmt(evil.length / 1048576, 2)} MiB`);
    await perConnection({ port, messages: 300, sessions: k.sessions, payload, deadline: performance.now() + 30_000 });
    const phase = async (withAttacker: boolean): Promise<AttackPhase> => {
      let stopped = false;
      const stop = () => stopped;
      const cpu0 = cpuMs(relay.pid);
      const probe = lagProbe(port, stop);
      const attack = withAttacker ? attacker(port, evil, stop) : null;
      const load = await perConnection({ port, messages: a.messages, sessions: k.sessions, payload, deadline: performance.now() + k.timeLimitS * 1000 });
      stopped = true;
      const lagSorted = sortedCopy(await probe);
      const attackResult = attack ? await attack : null;
      const sorted = sortedCopy(load.latenciesMs);
      const p: AttackPhase = {
        load,
        acceptRate: load.accepted / load.seconds,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        lag: { p50: percentile(lagSorted, 50), p99: percentile(lagSorted, 99), max: lagSorted.length ? lagSorted[lagSorted.length - 1]! : null, samples: lagSorted.length },
        attack: attackResult,
        relayCpuMs: cpuMs(relay.pid) - cpu0,
      };
      say(`under attack: ${withAttacker ? "with" : "without"} the attacker: ${p.load.accepted}/${p.load.attempted} in ${fmt(p.load.seconds, 2)} s = ${fmt(p.acceptRate)} msg/s, p99 ${fmt(p.p99, 2)} ms, NOOP max ${fmt(p.lag.max, 1)} ms`);
      return p;
    };
    const rounds: AttackRound[] = [];
    for (let i = 0; i < a.rounds; i++) {
      const without = await phase(false);
      const under = await phase(true);
      rounds.push({ without, with: under, p99Ratio: under.p99 !== null && without.p99 ? under.p99 / without.p99 : null, throughputRatio: under.acceptRate / without.acceptRate });
    }
    const median = (xs: (number | null)[]) => percentile(sortedCopy(Float64Array.from(xs.filter((x): x is number => x !== null))), 50);
    return { rounds, p99Ratio: median(rounds.map((r) => r.p99Ratio)), throughputRatio: median(rounds.map((r) => r.throughputRatio)) };
  } finally {
    await relay.stop();
    await dns.stop();
  }
}

export function printUnderAttack(report: AttackReport, k: Knobs): void {
  const replies = (p: AttackPhase) => (p.attack ? [...p.attack.replies].map(([code, n]) => `${n}×${code}`).join(" ") || "none" : "-");
  const secs = (p: AttackPhase) => {
    if (!p.attack?.secondsPerMessage.length) return "-";
    const s = sortedCopy(Float64Array.from(p.attack.secondsPerMessage));
    return `${fmt(percentile(s, 50), 2)} / ${fmt(s[s.length - 1], 2)}`;
  };
  const rows = report.rounds.flatMap((r, i) => {
    const row = (label: string, f: (p: AttackPhase) => string, ratio = "") => [`round ${i + 1}: ${label}`, f(r.without), f(r.with), ratio];
    return [
      row("normal load: accepted msg/s", (p) => fmt(p.acceptRate), fmt(r.throughputRatio, 2)),
      row("normal load: latency p50 ms", (p) => fmt(p.p50, 2)),
      row("normal load: latency p99 ms", (p) => fmt(p.p99, 2), fmt(r.p99Ratio, 2)),
      row("NOOP round trip p50 / p99 / max ms (event-loop lag)", (p) => `${fmt(p.lag.p50, 1)} / ${fmt(p.lag.p99, 1)} / ${fmt(p.lag.max, 1)}`),
      row("relay CPU ms per normal message", (p) => fmt(p.relayCpuMs / Math.max(1, p.load.accepted), 3)),
      row("attacker: messages sent; replies", (p) => (p.attack ? `${p.attack.sent}; ${replies(p)}` : "-")),
      row("attacker: end of data → reply s, median / max", secs),
    ];
  });
  rows.push(["median over the rounds: throughput with / without (goal ≥ 0.90)", "", "", fmt(report.throughputRatio, 2)]);
  rows.push(["median over the rounds: p99 with / without (goal ≤ 2)", "", "", fmt(report.p99Ratio, 2)]);
  console.log(table([`under attack: (a) with sender authentication, plus one client sending ${k.attack!.signatures}-signature messages`, "without", "with", "with / without"], rows));
  console.log("");
}
