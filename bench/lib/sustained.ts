// The sustained-load workload: messages at a fixed rate (open loop: each one starts at its
// scheduled time whether or not the earlier ones have finished, so a slow relay shows as
// latency, not as a lower rate), each on a new connection from one of many loopback source
// addresses, for a fixed time. Reports accept latency percentiles, refusals by reply, and the
// relay's memory over time (drift). Every loop is bounded by the message count and a deadline.

import { performance } from "node:perf_hooks";
import { rssKiB } from "./proc.ts";
import { SmtpConn, SmtpError } from "./smtp.ts";

const CONNECT_TIMEOUT_MS = 10_000;
const REPLY_TIMEOUT_MS = 30_000;
/** How often the scheduler looks for messages that are due. */
const TICK_MS = 2;

export interface SustainedOptions {
  readonly port: number;
  readonly perMinute: number;
  readonly seconds: number;
  readonly payload: Uint8Array;
  /** Client source addresses, used in turn (the DNS lists and per-IP limits see many clients). */
  readonly sources: readonly string[];
  /** Messages in flight at most; a message due beyond it is counted as not started. */
  readonly maxInFlight: number;
  readonly relayPid: number;
}

export interface SustainedResult {
  readonly perMinute: number;
  readonly scheduled: number;
  readonly accepted: number;
  /** Started late or not at all because maxInFlight messages were still in flight. */
  readonly notStarted: number;
  /** SMTP refusals by command and code ("RCPT 451"), and transport errors by kind. */
  readonly refusals: Map<string, number>;
  /** End of DATA (the final dot sent) to the 250, per accepted message, ms. */
  readonly acceptMs: Float64Array;
  /** Scheduled start to the 250: connect, greeting, EHLO, MAIL, RCPT, DATA, including any wait to start. */
  readonly transactionMs: Float64Array;
  /** The relay's VmRSS, KiB, sampled once a second: [seconds since start, KiB]. */
  readonly rss: readonly [number, number][];
  readonly seconds: number;
}

export async function sustained(o: SustainedOptions): Promise<SustainedResult> {
  const total = Math.max(1, Math.round((o.perMinute * o.seconds) / 60));
  const intervalMs = 60_000 / o.perMinute;
  const acceptMs = new Float64Array(total);
  const transactionMs = new Float64Array(total);
  const refusals = new Map<string, number>();
  const rss: [number, number][] = [];
  let accepted = 0;
  let notStarted = 0;
  let inFlight = 0;
  const running = new Set<Promise<void>>();
  const t0 = performance.now();
  const sampler = setInterval(() => {
    const kib = rssKiB(o.relayPid);
    if (kib !== null) rss.push([(performance.now() - t0) / 1000, kib]);
  }, 1000);

  const one = async (i: number, due: number) => {
    let c: SmtpConn | null = null;
    try {
      c = await SmtpConn.open(o.port, CONNECT_TIMEOUT_MS, o.sources[i % o.sources.length]);
      const banner = await c.reply(REPLY_TIMEOUT_MS);
      if (banner.code !== 220) throw new SmtpError(`banner ${banner.code}`, banner.text.trim());
      await c.expect("EHLO loadgen.src.test", 250, REPLY_TIMEOUT_MS);
      await c.expect(`MAIL FROM:<s${i % 997}@src.test>`, 250, REPLY_TIMEOUT_MS);
      await c.expect(`RCPT TO:<r${i % 13}@bench.test>`, 250, REPLY_TIMEOUT_MS);
      await c.expect("DATA", 354, REPLY_TIMEOUT_MS);
      c.write(o.payload);
      const sent = performance.now();
      const r = await c.reply(REPLY_TIMEOUT_MS);
      if (r.code !== 250) throw new SmtpError(`DATA-end ${r.code}`, r.text.trim());
      const now = performance.now();
      acceptMs[accepted] = now - sent;
      transactionMs[accepted] = now - due;
      accepted++;
      await c.quit();
    } catch (err) {
      const kind = err instanceof SmtpError ? err.kind : "error";
      refusals.set(kind, (refusals.get(kind) ?? 0) + 1);
      c?.destroy();
    }
  };

  const deadline = t0 + o.seconds * 1000 + 5_000;
  for (let i = 0; i < total && performance.now() < deadline; ) {
    const now = performance.now();
    for (; i < total && t0 + i * intervalMs <= now; i++) {
      if (inFlight >= o.maxInFlight) {
        notStarted++;
        continue;
      }
      inFlight++;
      const p = one(i, t0 + i * intervalMs).finally(() => {
        inFlight--;
        running.delete(p);
      });
      running.add(p);
    }
    await new Promise((r) => setTimeout(r, TICK_MS));
  }
  await Promise.all(running);
  clearInterval(sampler);
  return {
    perMinute: o.perMinute,
    scheduled: total,
    accepted,
    notStarted,
    refusals,
    acceptMs: acceptMs.slice(0, accepted),
    transactionMs: transactionMs.slice(0, accepted),
    rss,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Memory drift: mean RSS of the last fifth of the run minus the first fifth (after its start), MiB. */
export function rssDrift(rss: readonly [number, number][]): { firstMiB: number; lastMiB: number; peakMiB: number; driftMiB: number } | null {
  if (rss.length < 10) return null;
  const n = Math.max(2, Math.floor(rss.length / 5));
  const mean = (xs: readonly [number, number][]) => xs.reduce((s, [, k]) => s + k, 0) / xs.length / 1024;
  const firstMiB = mean(rss.slice(1, n + 1));
  const lastMiB = mean(rss.slice(-n));
  return { firstMiB, lastMiB, peakMiB: Math.max(...rss.map(([, k]) => k)) / 1024, driftMiB: lastMiB - firstMiB };
}
