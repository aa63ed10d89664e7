// The two load workloads and the idle-connection holder. Every loop stops at a message count
// or at a deadline, whichever comes first.

import { performance } from "node:perf_hooks";
import { SmtpConn, SmtpError } from "./smtp.ts";

const CONNECT_TIMEOUT_MS = 10_000;
const REPLY_TIMEOUT_MS = 30_000;
/** Give up on a workload once this many transactions have failed (a broken relay, not load). */
const MAX_ERRORS = 1000;

export interface LoadResult {
  readonly attempted: number;
  readonly accepted: number;
  /** Seconds from the first connect to the last reply. */
  readonly seconds: number;
  /** Acceptance latency of each accepted message, ms. */
  readonly latenciesMs: Float64Array;
  /** Failure kind -> count ("MAIL 421", "closed", "timeout", ...). */
  readonly errors: Map<string, number>;
  readonly stoppedBy: "count" | "time" | "errors";
}

export interface LoadOptions {
  readonly port: number;
  readonly messages: number;
  readonly sessions: number;
  readonly payload: Uint8Array;
  readonly deadline: number; // performance.now() value
}

class Tally {
  next = 0;
  accepted = 0;
  readonly latencies: Float64Array;
  readonly errors = new Map<string, number>();
  errorCount = 0;
  constructor(readonly opts: LoadOptions) {
    this.latencies = new Float64Array(opts.messages);
  }
  /** Claims the next message number, or null when the count, time or error budget is spent. */
  take(): number | null {
    if (this.next >= this.opts.messages || this.errorCount >= MAX_ERRORS || performance.now() >= this.opts.deadline) return null;
    return this.next++;
  }
  ok(ms: number): void {
    this.latencies[this.accepted++] = ms;
  }
  fail(err: unknown): void {
    const kind = err instanceof SmtpError ? err.kind : "error";
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
    this.errorCount++;
  }
  result(started: number): LoadResult {
    return {
      attempted: this.next,
      accepted: this.accepted,
      seconds: (performance.now() - started) / 1000,
      latenciesMs: this.latencies.slice(0, this.accepted),
      errors: this.errors,
      stoppedBy: this.next >= this.opts.messages ? "count" : this.errorCount >= MAX_ERRORS ? "errors" : "time",
    };
  }
}

async function transaction(c: SmtpConn, payload: Uint8Array): Promise<void> {
  await c.expect("MAIL FROM:<s@src.test>", 250, REPLY_TIMEOUT_MS);
  await c.expect("RCPT TO:<r@bench.test>", 250, REPLY_TIMEOUT_MS);
  await c.expect("DATA", 354, REPLY_TIMEOUT_MS);
  c.write(payload);
  const r = await c.reply(REPLY_TIMEOUT_MS);
  if (r.code !== 250) throw new SmtpError(`DATA-end ${r.code}`, r.text.trim());
}

async function greet(c: SmtpConn): Promise<void> {
  const banner = await c.reply(REPLY_TIMEOUT_MS);
  if (banner.code !== 220) throw new SmtpError(`banner ${banner.code}`, banner.text.trim());
  await c.expect("EHLO loadgen.src.test", 250, REPLY_TIMEOUT_MS);
}

/** Workload (a): every message on a new connection; latency = TCP connect -> 250 after the dot. */
export async function perConnection(opts: LoadOptions): Promise<LoadResult> {
  const t = new Tally(opts);
  const started = performance.now();
  const worker = async () => {
    while (t.take() !== null) {
      const t0 = performance.now();
      let c: SmtpConn | null = null;
      try {
        c = await SmtpConn.open(opts.port, CONNECT_TIMEOUT_MS);
        await greet(c);
        await transaction(c, opts.payload);
        t.ok(performance.now() - t0);
        await c.quit();
      } catch (err) {
        t.fail(err);
        c?.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: opts.sessions }, worker));
  return t.result(started);
}

/** Workload (b): persistent sessions, many messages per connection; latency = MAIL -> 250 after the dot. */
export async function persistent(opts: LoadOptions): Promise<LoadResult> {
  const t = new Tally(opts);
  const started = performance.now();
  const worker = async () => {
    let c: SmtpConn | null = null;
    while (t.take() !== null) {
      try {
        if (!c || c.closed) {
          c?.destroy();
          c = await SmtpConn.open(opts.port, CONNECT_TIMEOUT_MS);
          await greet(c);
        }
        const t0 = performance.now();
        await transaction(c, opts.payload);
        t.ok(performance.now() - t0);
      } catch (err) {
        t.fail(err);
        c?.destroy();
        c = null;
      }
    }
    await c?.quit();
  };
  await Promise.all(Array.from({ length: opts.sessions }, worker));
  return t.result(started);
}

export interface IdleHold {
  readonly requested: number;
  readonly ready: number;
  readonly failed: number;
  readonly openSeconds: number;
  readonly errors: Map<string, number>;
  /** QUITs and closes every held connection. */
  release(): Promise<void>;
}

/** Opens `count` connections (at most `openConcurrency` at a time) that read the banner, say EHLO and then wait. */
export async function holdIdle(port: number, count: number, deadline: number, openConcurrency = 100): Promise<IdleHold> {
  const held: SmtpConn[] = [];
  const errors = new Map<string, number>();
  let next = 0;
  let failed = 0;
  const started = performance.now();
  const opener = async () => {
    while (next < count && performance.now() < deadline && failed < MAX_ERRORS) {
      next++;
      let c: SmtpConn | null = null;
      try {
        c = await SmtpConn.open(port, CONNECT_TIMEOUT_MS);
        await greet(c);
        held.push(c);
      } catch (err) {
        failed++;
        const kind = err instanceof SmtpError ? err.kind : "error";
        errors.set(kind, (errors.get(kind) ?? 0) + 1);
        c?.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(openConcurrency, count) }, opener));
  const openSeconds = (performance.now() - started) / 1000;
  return {
    requested: count,
    ready: held.filter((c) => !c.closed).length,
    failed,
    openSeconds,
    errors,
    async release() {
      // QUIT in batches so closing 2,000 sessions does not itself become a burst test.
      for (let i = 0; i < held.length; i += 200) await Promise.all(held.slice(i, i + 200).map((c) => c.quit(2000)));
    },
  };
}
