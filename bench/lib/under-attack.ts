// Workload (c), "under attack": the per-connection load of (a) on a relay with sender
// authentication on, once alone and once while one untrusted client sends signature-heavy
// messages back to back; a NOOP probe on another session measures the event-loop lag meanwhile.
// The figures that matter are the normal load's ratios: p99 with/without (goal <= 2) and
// throughput with/without (goal >= 0.9). ATTACK_ROUNDS rounds of (without, control, with) on one
// relay; each round gives its own ratios (a shared host drifts between rounds), reported with
// their median. The control attacker sends the same size of message with one signature: what any
// client sending big messages costs, to tell apart from what the signatures cost.

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
  readonly control: AttackPhase;
  readonly with: AttackPhase;
  readonly p99Ratio: number | null;
  readonly throughputRatio: number;
  readonly controlP99Ratio: number | null;
  readonly controlThroughputRatio: number;
}

export interface AttackReport {
  readonly rounds: readonly AttackRound[];
  /** Medians over the rounds. */
  readonly p99Ratio: number | null;
  readonly throughputRatio: number | null;
  readonly controlP99Ratio: number | null;
  readonly controlThroughputRatio: number | null;
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
  const plain = attackMessage(1, a.bodyBytes);
  try {
    say(`under attack: mailraven pid ${relay.pid}, sender authentication on; attacker message ${a.signatures} signatures, ${fmt(evil.length / 1048576, 2)} MiB`);
    await perConnection({ port, messages: 300, sessions: k.sessions, payload, deadline: performance.now() + 30_000 });
    const phase = async (name: string, attackPayload: Uint8Array | null): Promise<AttackPhase> => {
      let stopped = false;
      const stop = () => stopped;
      const cpu0 = cpuMs(relay.pid);
      const probe = lagProbe(port, stop);
      const attack = attackPayload ? attacker(port, attackPayload, stop) : null;
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
      say(`under attack: ${name}: ${p.load.accepted}/${p.load.attempted} in ${fmt(p.load.seconds, 2)} s = ${fmt(p.acceptRate)} msg/s, p99 ${fmt(p.p99, 2)} ms, NOOP max ${fmt(p.lag.max, 1)} ms`);
      return p;
    };
    const rounds: AttackRound[] = [];
    const p99Ratio = (p: AttackPhase, base: AttackPhase) => (p.p99 !== null && base.p99 ? p.p99 / base.p99 : null);
    for (let i = 0; i < a.rounds; i++) {
      const without = await phase("without an attacker", null);
      const control = await phase("beside the control (1 signature)", plain);
      const under = await phase(`beside the attacker (${a.signatures} signatures)`, evil);
      rounds.push({
        without,
        control,
        with: under,
        p99Ratio: p99Ratio(under, without),
        throughputRatio: under.acceptRate / without.acceptRate,
        controlP99Ratio: p99Ratio(control, without),
        controlThroughputRatio: control.acceptRate / without.acceptRate,
      });
    }
    const median = (xs: (number | null)[]) => percentile(sortedCopy(Float64Array.from(xs.filter((x): x is number => x !== null))), 50);
    return {
      rounds,
      p99Ratio: median(rounds.map((r) => r.p99Ratio)),
      throughputRatio: median(rounds.map((r) => r.throughputRatio)),
      controlP99Ratio: median(rounds.map((r) => r.controlP99Ratio)),
      controlThroughputRatio: median(rounds.map((r) => r.controlThroughputRatio)),
    };
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
    const row = (label: string, f: (p: AttackPhase) => string, ratio = "", control = "") => [`round ${i + 1}: ${label}`, f(r.without), f(r.control), f(r.with), ratio, control];
    return [
      row("normal load: accepted msg/s", (p) => fmt(p.acceptRate), fmt(r.throughputRatio, 2), fmt(r.controlThroughputRatio, 2)),
      row("normal load: latency p50 ms", (p) => fmt(p.p50, 2)),
      row("normal load: latency p99 ms", (p) => fmt(p.p99, 2), fmt(r.p99Ratio, 2), fmt(r.controlP99Ratio, 2)),
      row("NOOP round trip p50 / p99 / max ms (event-loop lag)", (p) => `${fmt(p.lag.p50, 1)} / ${fmt(p.lag.p99, 1)} / ${fmt(p.lag.max, 1)}`),
      row("relay CPU ms per normal message", (p) => fmt(p.relayCpuMs / Math.max(1, p.load.accepted), 3)),
      row("attacker: messages sent; replies", (p) => (p.attack ? `${p.attack.sent}; ${replies(p)}` : "-")),
      row("attacker: end of data → reply s, median / max", secs),
    ];
  });
  rows.push(["median over the rounds: throughput / without (goal ≥ 0.90)", "", "", "", fmt(report.throughputRatio, 2), fmt(report.controlThroughputRatio, 2)]);
  rows.push(["median over the rounds: p99 / without (goal ≤ 2)", "", "", "", fmt(report.p99Ratio, 2), fmt(report.controlP99Ratio, 2)]);
  const heavy = `${k.attack!.signatures} signatures`;
  console.log(table([`under attack: (a) with sender authentication on, beside one client sending ${fmt(k.attack!.bodyBytes / 1048576, 1)} MiB messages`, "without", "control: 1 signature", heavy, `${heavy} / without`, "control / without"], rows));
  console.log("");
}
