// `bun run bench`: load-test build/mailraven on loopback and print what it sustains.
//
//   sink (smtp-sink or in-process smtp-server, counting) <- mailraven <- load client (this process)
//
// Workloads: (a) one connection per message, SESSIONS concurrent; (b) PERSISTENT_SESSIONS
// sessions that reuse their connection; then IDLE_CONNS idle connections on a fresh relay;
// (c) "under attack": (a) with sender authentication on, alone and beside a client sending
// signature-heavy messages (bench/lib/under-attack.ts); then the sustained load:
// SUSTAINED_RATES messages a minute for SUSTAINED_S each, defenses on.
// See bench/README.md for the knobs and for the same-run comparison with Postfix (compare.sh).

import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { readKnobs, type Knobs } from "./lib/knobs.ts";
import { holdIdle, perConnection, persistent, type LoadOptions, type LoadResult } from "./lib/load.ts";
import { atExit, busyPct, cpuMs, cpuStat, threadCpuMs, killChildrenOnExit, openFileLimit, rssKiB, rssSampler } from "./lib/proc.ts";
import { binaryInfo, freePort, startRelay, tmpfsWarning, type Relay } from "./lib/relay.ts";
import { findSmtpSink, startServerSink, startSmtpSink, type Sink } from "./lib/sink.ts";
import { buildMessage, SmtpConn } from "./lib/smtp.ts";
import { fmt, percentile, sortedCopy, table } from "./lib/stats.ts";
import { printSustained, runSustained } from "./lib/sustained-run.ts";
import { DnsServer } from "../tests/helpers/dns.ts";
import { measureUnderAttack, printUnderAttack } from "./lib/under-attack.ts";
import { measureCluster, printCluster } from "./lib/cluster.ts";

const BUILT = process.env.MAILRAVEN_BIN ? resolve(process.env.MAILRAVEN_BIN) : resolve(import.meta.dir, "../build/mailraven");
/** The copy of BUILT that is measured: a rebuild during the run must not change what runs. */
let BINARY = BUILT;
/** File descriptors kept free beside the idle connections (listeners, sink, queue, stdio). */
const FD_HEADROOM = 256;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const say = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

interface WorkloadReport {
  readonly name: string;
  readonly sessions: number;
  readonly latencyLabel: string;
  readonly load: LoadResult;
  readonly acceptRate: number;
  readonly p50: number | null;
  readonly p99: number | null;
  readonly e2eSeconds: number | null;
  readonly delivered: number;
  readonly cpuMsPerMsg: number | null;
  /** Of which the main thread (SMTP, queue commits) and the delivery thread. */
  readonly mainMsPerMsg: number | null;
  readonly deliveryMsPerMsg: number | null;
  readonly peakRssKiB: number;
  readonly machineBusyPct: number;
}

interface IdleReport {
  readonly requested: number;
  readonly ready: number;
  readonly failed: number;
  readonly openSeconds: number;
  readonly beforeKiB: number;
  readonly afterKiB: number;
  readonly perConnKiB: number | null;
  readonly note: string | null;
}

async function measure(name: string, latencyLabel: string, relay: Relay, sink: Sink, k: Knobs, run: (o: LoadOptions) => Promise<LoadResult>, sessions: number, payload: Uint8Array): Promise<WorkloadReport> {
  say(`${name}: ${k.messages} messages of ${k.size} B over ${sessions} sessions (limit ${k.timeLimitS} s)`);
  const base = sink.count();
  const cpu0 = cpuMs(relay.pid);
  const threads0 = threadCpuMs(relay.pid);
  const sys0 = cpuStat();
  const rss = rssSampler(relay.pid, 250);
  const t0 = performance.now();
  const load = await run({ port: relay.port, messages: k.messages, sessions, payload, deadline: t0 + k.timeLimitS * 1000 });
  const delivered = await sink.waitFor(base + load.accepted, performance.now() + k.drainLimitS * 1000);
  const e2eSeconds = delivered ? (performance.now() - t0) / 1000 : null;
  const peakRssKiB = rss.stop();
  const cpu1 = cpuMs(relay.pid);
  const threads1 = threadCpuMs(relay.pid);
  const machineBusyPct = busyPct(sys0, cpuStat());
  const sorted = sortedCopy(load.latenciesMs);
  const report: WorkloadReport = {
    name,
    sessions,
    latencyLabel,
    load,
    acceptRate: load.accepted / load.seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    e2eSeconds,
    delivered: sink.count() - base,
    cpuMsPerMsg: load.accepted > 0 ? (cpu1 - cpu0) / load.accepted : null,
    mainMsPerMsg: load.accepted > 0 ? (threads1.main - threads0.main) / load.accepted : null,
    deliveryMsPerMsg: load.accepted > 0 ? (threads1.workers - threads0.workers) / load.accepted : null,
    peakRssKiB,
    machineBusyPct,
  };
  const errs = [...load.errors].map(([kind, n]) => `${kind}: ${n}`).join(", ");
  say(
    `${name}: accepted ${load.accepted}/${load.attempted} in ${fmt(load.seconds, 2)} s = ${fmt(report.acceptRate)} msg/s` +
      `, delivered ${report.delivered}${e2eSeconds === null ? ` (NOT all within ${k.drainLimitS} s)` : ` in ${fmt(e2eSeconds, 2)} s`}` +
      (errs ? `; errors: ${errs}` : "") +
      (load.stoppedBy !== "count" ? `; stopped by the ${load.stoppedBy} limit` : ""),
  );
  return report;
}

/**
 * The same workloads on a fresh relay with DNS lists (against a local dnsmasq) and greylisting
 * (client network allowlisted) on, after a warm-up that fills the caches.
 */
async function measureDefenses(k: Knobs, dir: string, sink: Sink, payload: Uint8Array): Promise<WorkloadReport[] | null> {
  let dns: DnsServer;
  try {
    dns = await DnsServer.start({});
  } catch (err) {
    say(`defenses run skipped: no DNS server (${err instanceof Error ? err.message : err}); install dnsmasq-base`);
    return null;
  }
  const port = await freePort();
  const relay = await startRelay(BINARY, dir, "relay-defenses", {
    port,
    sinkPort: sink.port,
    stateDir: join(dir, "state-defenses"),
    maxConnections: Math.max(k.sessions, k.persistentSessions) + 100,
    defensesDns: dns.address,
  });
  try {
    say(`defenses: mailraven pid ${relay.pid} with DNS lists at ${dns.address} and greylisting`);
    const base = sink.count();
    const w = await perConnection({ port, messages: Math.max(k.warmup, 100), sessions: k.sessions, payload, deadline: performance.now() + 30_000 });
    await sink.waitFor(base + w.accepted, performance.now() + k.drainLimitS * 1000);
    if (w.accepted === 0) throw new Error(`the defended relay accepted nothing in the warm-up: ${relay.logTail()}`);
    return [
      await measure("(a) with defenses", "connect", relay, sink, k, perConnection, k.sessions, payload),
      await measure("(b) with defenses", "MAIL FROM", relay, sink, k, persistent, k.persistentSessions, payload),
    ];
  } finally {
    await relay.stop();
    await dns.stop();
  }
}

function printDefenses(plain: WorkloadReport[], defended: WorkloadReport[]): void {
  const rows = plain.map((p, i) => {
    const d = defended[i]!;
    return [p.name, fmt(p.acceptRate), fmt(d.acceptRate), fmt(d.acceptRate / p.acceptRate, 2), fmt(p.p99, 2), fmt(d.p99, 2)];
  });
  console.log(table(["cost of the defenses (DNS lists + greylisting, warm caches)", "plain msg/s", "defended msg/s", "ratio", "p99 plain", "p99 defended"], rows));
  console.log("");
}

async function measureIdle(k: Knobs, dir: string, sinkPort: number): Promise<IdleReport | null> {
  let conns = k.idleConns;
  let note: string | null = null;
  const limit = openFileLimit();
  if (conns + FD_HEADROOM > limit) {
    const lowered = Math.max(0, limit - FD_HEADROOM);
    note = `ulimit -n is ${limit}: lowered IDLE_CONNS from ${conns} to ${lowered} (raise it with \`ulimit -n ${conns + FD_HEADROOM}\` or more)`;
    say(note);
    conns = lowered;
  }
  if (conns <= 0) return null;
  const port = await freePort();
  // A fresh relay, so the heap left over by the workloads does not absorb the new connections.
  const relay = await startRelay(BINARY, dir, "relay-idle", { port, sinkPort, stateDir: join(dir, "state-idle"), maxConnections: conns + 100 });
  try {
    // One-time costs (JIT, lazily built session objects) are paid by a few sessions first.
    for (let i = 0; i < 20; i++) {
      const c = await SmtpConn.open(port, 5000);
      await c.reply(5000);
      await c.command("EHLO warm.src.test", 5000);
      await c.quit();
    }
    await sleep(2000);
    const beforeKiB = rssKiB(relay.pid) ?? 0;
    say(`idle: opening ${conns} connections (banner + EHLO, then wait); relay RSS before ${fmt(beforeKiB / 1024)} MiB`);
    const hold = await holdIdle(port, conns, performance.now() + k.timeLimitS * 1000);
    await sleep(2000);
    const afterKiB = rssKiB(relay.pid) ?? 0;
    await hold.release();
    const errs = [...hold.errors].map(([kind, n]) => `${kind}: ${n}`).join(", ");
    say(`idle: ${hold.ready}/${conns} held (opened in ${fmt(hold.openSeconds, 2)} s${errs ? `; errors: ${errs}` : ""}); RSS after ${fmt(afterKiB / 1024)} MiB`);
    return {
      requested: conns,
      ready: hold.ready,
      failed: hold.failed,
      openSeconds: hold.openSeconds,
      beforeKiB,
      afterKiB,
      perConnKiB: hold.ready > 0 ? (afterKiB - beforeKiB) / hold.ready : null,
      note,
    };
  } finally {
    await relay.stop();
  }
}

function printReport(k: Knobs, binaryLabel: string, sinkKind: string, work: WorkloadReport[], idle: IdleReport | null, leftover: number | null): void {
  const col = (f: (w: WorkloadReport) => string) => work.map(f);
  const rows: string[][] = [
    ["sessions", ...col((w) => String(w.sessions))],
    ["messages accepted / attempted", ...col((w) => `${w.load.accepted} / ${w.load.attempted}`)],
    ["failed transactions", ...col((w) => String(w.load.attempted - w.load.accepted))],
    ["accepted msg/s (durable 250)", ...col((w) => fmt(w.acceptRate))],
    ["acceptance latency p50 ms", ...col((w) => fmt(w.p50, 2))],
    ["acceptance latency p99 ms", ...col((w) => fmt(w.p99, 2))],
    ["  (latency measured from)", ...col((w) => w.latencyLabel)],
    ["end-to-end delivered msg/s", ...col((w) => (w.e2eSeconds === null ? "incomplete" : fmt(w.load.accepted / w.e2eSeconds)))],
    ["queue drain after last 250, s", ...col((w) => (w.e2eSeconds === null ? "-" : fmt(w.e2eSeconds - w.load.seconds, 2)))],
    ["relay CPU ms/msg", ...col((w) => fmt(w.cpuMsPerMsg, 3))],
    ["  of which SMTP (main) thread", ...col((w) => fmt(w.mainMsPerMsg, 3))],
    ["  of which delivery thread", ...col((w) => fmt(w.deliveryMsPerMsg, 3))],
    ["relay peak RSS MiB", ...col((w) => fmt(w.peakRssKiB / 1024))],
    ["machine busy % (2 cores, all)", ...col((w) => fmt(w.machineBusyPct, 0))],
  ];
  console.log("");
  console.log(`mailraven benchmark — ${new Date().toISOString().slice(0, 19)}Z, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, kernel ${release()}, Bun ${Bun.version}`);
  console.log(`binary ${binaryLabel}; sink ${sinkKind}; ${k.size} B messages; warm-up ${k.warmup}`);
  console.log("");
  console.log(table(["metric", ...work.map((w) => w.name)], rows));
  if (leftover !== null) console.log(`\nmessages left in the relay's queue after stop: ${leftover}`);
  if (idle) {
    console.log("");
    console.log(
      table(
        ["idle connections (fresh relay, banner + EHLO)", "value"],
        [
          ["held / requested", `${idle.ready} / ${idle.requested}`],
          ["time to open, s", fmt(idle.openSeconds, 2)],
          ["relay RSS before → after, MiB", `${fmt(idle.beforeKiB / 1024)} → ${fmt(idle.afterKiB / 1024)}`],
          ["RSS per idle connection, KiB", fmt(idle.perConnKiB, 1)],
        ],
      ),
    );
    if (idle.note) console.log(idle.note);
  }
  console.log("");
}

async function main(): Promise<number> {
  if (!existsSync(BUILT)) {
    console.error(`${BUILT} not found: run \`npm run build\` first (the benchmark measures the compiled binary).`);
    return 2;
  }
  const k = readKnobs();
  killChildrenOnExit();
  const dir = mkdtempSync(join(tmpdir(), "mailraven-bench-"));
  if (!k.keep) atExit(() => rmSync(dir, { recursive: true, force: true }));
  const binaryLabel = binaryInfo(BUILT);
  BINARY = join(dir, "mailraven");
  copyFileSync(BUILT, BINARY);
  chmodSync(BINARY, 0o755);
  const tmpfs = tmpfsWarning(dir);
  if (tmpfs) say(`warning: ${tmpfs}`);
  let sink: Sink | null = null;
  let relay: Relay | null = null;
  try {
    const q0 = cpuStat();
    await sleep(1000);
    const background = busyPct(q0, cpuStat());
    say(`machine ${fmt(background, 0)}% busy before starting${background > 15 ? " (noisy: figures will be low; compare runs made together)" : ""}`);

    const sinkPort = await freePort();
    const smtpSink = k.sink === "smtp-server" ? null : findSmtpSink();
    if (k.sink === "smtp-sink" && !smtpSink) throw new Error("SINK=smtp-sink but smtp-sink is not installed (Debian: apt-get install postfix)");
    sink = smtpSink ? await startSmtpSink(smtpSink, sinkPort) : await startServerSink(sinkPort);
    say(`sink: ${sink.kind} on 127.0.0.1:${sinkPort}`);

    const port = await freePort();
    const maxConnections = Math.max(k.sessions, k.persistentSessions) + 100;
    relay = await startRelay(BINARY, dir, "relay", { port, sinkPort, stateDir: join(dir, "state"), maxConnections });
    say(`mailraven pid ${relay.pid} on 127.0.0.1:${port} (config ${relay.configPath})`);

    const payload = buildMessage(k.size);
    if (k.warmup > 0) {
      const base = sink.count();
      const w = await perConnection({ port, messages: k.warmup, sessions: k.sessions, payload, deadline: performance.now() + Math.min(k.timeLimitS, 30) * 1000 });
      const drained = await sink.waitFor(base + w.accepted, performance.now() + k.drainLimitS * 1000);
      say(`warm-up: ${w.accepted}/${k.warmup} accepted${drained ? ", all delivered" : ", NOT all delivered"}`);
      if (w.accepted === 0) throw new Error(`the relay accepted none of the warm-up messages (${[...w.errors].map(([e, n]) => `${e}: ${n}`).join(", ")}):\n${relay.logTail()}`);
    }

    const runs = (part: string) => k.only === null || k.only.has(part);
    const work: WorkloadReport[] = [];
    if (runs("throughput")) {
      work.push(await measure("(a) new connection per message", "connect", relay, sink, k, perConnection, k.sessions, payload));
      work.push(await measure("(b) persistent sessions", "MAIL FROM", relay, sink, k, persistent, k.persistentSessions, payload));
    }
    const stopped = await relay.stop();
    relay = null;
    const defended = k.defenses && runs("defenses") && work.length ? await measureDefenses(k, dir, sink, payload) : null;
    const attacked = runs("attack") ? await measureUnderAttack(k, BINARY, dir, sinkPort, payload, say) : null;

    const idle = k.idleConns > 0 && runs("idle") ? await measureIdle(k, dir, sinkPort) : null;
    const steady = k.sustainedS > 0 && runs("sustained") ? await runSustained(k, BINARY, dir, sink, payload, say) : null;
    const clustered = k.clusterMessages > 0 && runs("cluster") ? await measureCluster(k, BINARY, dir, sink, payload, say) : null;
    if (work.length || idle) printReport(k, binaryLabel, sink.kind, work, idle, stopped.queued);
    if (defended) printDefenses(work, defended);
    if (attacked) printUnderAttack(attacked, k);
    if (steady) printSustained(steady, k.sustainedS);
    if (clustered) printCluster(clustered);
    if (k.jsonOut) {
      const plain = {
        date: new Date().toISOString(),
        binary: binaryLabel,
        knobs: k,
        sink: sink.kind,
        workloads: work.map(({ load, ...w }) => ({ ...w, accepted: load.accepted, attempted: load.attempted, seconds: load.seconds, errors: Object.fromEntries(load.errors), stoppedBy: load.stoppedBy })),
        idle,
        underAttack: attacked && {
          p99Ratio: attacked.p99Ratio,
          throughputRatio: attacked.throughputRatio,
          controlP99Ratio: attacked.controlP99Ratio,
          controlThroughputRatio: attacked.controlThroughputRatio,
          rounds: attacked.rounds.map((r) => ({
            p99Ratio: r.p99Ratio,
            throughputRatio: r.throughputRatio,
            controlP99Ratio: r.controlP99Ratio,
            controlThroughputRatio: r.controlThroughputRatio,
            phases: [r.without, r.control, r.with].map(({ load, attack, ...p }) => ({ ...p, accepted: load.accepted, seconds: load.seconds, attack: attack && { sent: attack.sent, replies: Object.fromEntries(attack.replies) } })),
          })),
        },
        queueLeftAfterStop: stopped.queued,
        cluster: clustered,
        sustained: steady?.map(({ result: r, ...rest }) => ({ ...rest, perMinute: r.perMinute, scheduled: r.scheduled, accepted: r.accepted, notStarted: r.notStarted, refusals: Object.fromEntries(r.refusals), seconds: r.seconds, acceptP50Ms: percentile(sortedCopy(r.acceptMs), 50), acceptP99Ms: percentile(sortedCopy(r.acceptMs), 99), rss: r.rss })),
      };
      writeFileSync(k.jsonOut, JSON.stringify(plain, null, 2));
    }
    const incomplete = work.some((w) => w.e2eSeconds === null || w.load.accepted < w.load.attempted) || (steady ?? []).some((r) => r.delivered < r.result.accepted);
    return incomplete ? 1 : 0;
  } finally {
    if (relay) await relay.stop();
    if (sink) await sink.stop();
    if (k.keep) say(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
