// The next hop: Postfix's smtp-sink when installed (it counts messages with -c), otherwise an
// in-process smtp-server that accepts, discards and counts. Both listen on 127.0.0.1 only.

import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { alive, startChild, stopChild } from "./proc.ts";
import { bannerOk, HOST } from "./smtp.ts";

export interface Sink {
  readonly kind: string;
  readonly port: number;
  /** Messages received so far. */
  count(): number;
  /** Resolves true once count() >= n, false at the deadline (performance.now() value). */
  waitFor(n: number, deadline: number): Promise<boolean>;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function poll(done: () => boolean, deadline: number, everyMs: number): Promise<boolean> {
  while (!done()) {
    if (performance.now() >= deadline) return false;
    await sleep(everyMs);
  }
  return true;
}

export function findSmtpSink(): string | null {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"]) {
    if (dir && existsSync(join(dir, "smtp-sink"))) return join(dir, "smtp-sink");
  }
  return null;
}

/** smtp-sink -c prints running counters ("... mesg=N") on stdout after every event. */
export async function startSmtpSink(bin: string, port: number): Promise<Sink> {
  const root = process.getuid?.() === 0;
  // -u: smtp-sink drops root privileges to this user after binding; as non-root it needs none.
  const args = ["-c", ...(root ? ["-u", "nobody"] : []), "-m", "1024", `${HOST}:${port}`, "1024"];
  const child: ChildProcess = startChild(bin, args);
  let count = 0;
  let tail = "";
  let stderr = "";
  child.stdout!.setEncoding("latin1");
  child.stdout!.on("data", (d: string) => {
    tail = (tail + d).slice(-256);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all[all.length - 1];
    if (last) count = Number(last[1]);
  });
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const sink: Sink = {
    kind: `smtp-sink (${bin})`,
    port,
    count: () => count,
    waitFor: (n, deadline) => poll(() => count >= n, deadline, 10),
    stop: () => stopChild(child, 5000),
  };
  // Ready once it answers with a banner.
  const deadline = performance.now() + 10_000;
  while (!(await bannerOk(port))) {
    if (!alive(child) || performance.now() >= deadline) {
      await sink.stop();
      throw new Error(`smtp-sink did not start on ${HOST}:${port}: ${stderr.trim() || "no output"}`);
    }
    await sleep(50);
  }
  return sink;
}

/** In-process sink built on smtp-server (a dependency of mailraven): accept, discard, count. */
export async function startServerSink(port: number): Promise<Sink> {
  const { SMTPServer } = await import("smtp-server");
  let count = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    disableReverseLookup: true,
    logger: false,
    size: 64 * 1024 * 1024,
    onData(stream, _session, callback) {
      stream.on("data", () => {});
      stream.on("end", () => {
        count++;
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(port, HOST, () => resolve());
  });
  return {
    kind: "smtp-server (in-process)",
    port,
    count: () => count,
    waitFor: (n, deadline) => poll(() => count >= n, deadline, 10),
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
