// Child-process bookkeeping and /proc sampling. Only processes this benchmark started are
// ever signalled, by PID; all of them are killed when the benchmark exits, however it exits.

import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const children = new Set<ChildProcess>();

export function startChild(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    if (alive(child)) child.kill("SIGKILL");
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

const exitHooks: (() => void)[] = [];

/** Runs `fn` (synchronously) when the process exits, after the children have been killed. */
export function atExit(fn: () => void): void {
  exitHooks.push(fn);
}

function killAll(): void {
  for (const child of children) if (alive(child)) child.kill("SIGKILL");
  for (const fn of exitHooks.splice(0)) {
    try {
      fn();
    } catch {
      // best effort on the way out
    }
  }
}

let installed = false;
export function killChildrenOnExit(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: stopping the relay and the sink`);
      killAll();
      process.exit(130);
    });
  }
}

const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** utime + stime of a process (all its threads), in milliseconds. */
export function cpuMs(pid: number): number {
  return statCpuMs(readFileSync(`/proc/${pid}/stat`, "latin1"));
}

/**
 * CPU of the relay's main thread (SMTP, the queue's commits) and of its Bun Worker threads (the
 * delivery thread; the kernel names them "Worker"), in milliseconds; the rest (JIT, GC) is
 * cpuMs() minus both.
 */
export function threadCpuMs(pid: number): { main: number; workers: number } {
  let main = 0;
  let workers = 0;
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { main, workers };
  }
  for (const tid of tasks) {
    try {
      const ms = statCpuMs(readFileSync(`/proc/${pid}/task/${tid}/stat`, "latin1"));
      if (tid === String(pid)) main = ms;
      else if (readFileSync(`/proc/${pid}/task/${tid}/comm`, "latin1").trim() === "Worker") workers += ms;
    } catch {
      // the thread ended
    }
  }
  return { main, workers };
}

function statCpuMs(stat: string): number {
  // Fields after the command name, which may itself contain spaces and parentheses.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return ((utime + stime) * 1000) / CLK_TCK;
}

/** VmRSS of a process in KiB, or null once it has gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Samples VmRSS every `everyMs` until stopped; returns the peak in KiB. */
export function rssSampler(pid: number, everyMs = 250): { stop(): number } {
  let peak = rssKiB(pid) ?? 0;
  const timer = setInterval(() => {
    const v = rssKiB(pid);
    if (v !== null && v > peak) peak = v;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const v = rssKiB(pid);
      if (v !== null && v > peak) peak = v;
      return peak;
    },
  };
}

/** Whole-machine busy/total jiffies, to report how busy the (shared) box was. */
export function cpuStat(): { busy: number; total: number } {
  const first = readFileSync("/proc/stat", "latin1").split("\n")[0] ?? "";
  const f = first.trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export function busyPct(a: { busy: number; total: number }, b: { busy: number; total: number }): number {
  return (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total);
}

/** The soft limit on open files of this process (children inherit it). */
export function openFileLimit(): number {
  try {
    const line = readFileSync("/proc/self/limits", "latin1").split("\n").find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(soft);
  } catch {
    return 1024;
  }
}
