// The "under attack" workload's two extra clients: an attacker that sends signature-heavy
// messages back to back from an untrusted address (127.0.0.2), each with many DKIM-Signature
// fields of different l= over a large body (what once held the relay's event loop for seconds),
// and a probe that measures how long a cheap command (NOOP) waits for its reply meanwhile: the
// relay's event-loop lag as another session sees it. Both stop when told to, or at a deadline.

import { performance } from "node:perf_hooks";
import { SmtpConn, SmtpError } from "./smtp.ts";

export const ATTACKER_ADDRESS = "127.0.0.2";
const REPLY_TIMEOUT_MS = 60_000;

export interface AttackResult {
  readonly sent: number;
  /** Final replies by code ("250", "451", ...; "error" for a broken session). */
  readonly replies: Map<string, number>;
  /** Seconds from the end of each message's data to its reply. */
  readonly secondsPerMessage: number[];
}

/** A message with `signatures` DKIM-Signature fields (each its own l=) and a body of about `bodyBytes`, in DATA form with the dot. */
export function attackMessage(signatures: number, bodyBytes: number): Uint8Array {
  const sigs = Array.from(
    { length: signatures },
    (_, i) => `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d${i}.attacker.test; s=s${i}; l=${(i + 1) * 997}; h=from:to:subject; bh=${btoa(`bh${i}`)}; b=${btoa(`sig${i}`)}\r\n`,
  ).join("");
  const line = "The quarterly numbers are attached below, as discussed.\r\n";
  const body = line.repeat(Math.max(1, Math.floor(bodyBytes / line.length)));
  return new TextEncoder().encode(`${sigs}From: <m@attacker.test>\r\nTo: <r@bench.test>\r\nSubject: numbers\r\nMessage-ID: <a@attacker.test>\r\n\r\n${body}.\r\n`);
}

/** Sends `payload` again and again on one connection (a new one after a failure) until `stop()`. */
export async function attacker(port: number, payload: Uint8Array, stop: () => boolean): Promise<AttackResult> {
  const replies = new Map<string, number>();
  const seconds: number[] = [];
  const count = (k: string) => replies.set(k, (replies.get(k) ?? 0) + 1);
  let c: SmtpConn | null = null;
  let sent = 0;
  while (!stop()) {
    try {
      if (!c || c.closed) {
        c?.destroy();
        c = await SmtpConn.open(port, 10_000, ATTACKER_ADDRESS);
        if ((await c.reply(REPLY_TIMEOUT_MS)).code !== 220) throw new SmtpError("banner", "no greeting");
        await c.expect("EHLO attacker.test", 250, REPLY_TIMEOUT_MS);
      }
      await c.expect("MAIL FROM:<m@attacker.test>", 250, REPLY_TIMEOUT_MS);
      await c.expect("RCPT TO:<r@bench.test>", 250, REPLY_TIMEOUT_MS);
      await c.expect("DATA", 354, REPLY_TIMEOUT_MS);
      c.write(payload);
      sent++;
      const t0 = performance.now();
      const r = await c.reply(REPLY_TIMEOUT_MS);
      seconds.push((performance.now() - t0) / 1000);
      count(String(r.code));
    } catch {
      count("error");
      c?.destroy();
      c = null;
    }
  }
  await c?.quit();
  return { sent, replies, secondsPerMessage: seconds };
}

/** NOOP round trips on one trusted session until `stop()`, 20 per second: each one's milliseconds. */
export async function lagProbe(port: number, stop: () => boolean): Promise<Float64Array> {
  const samples: number[] = [];
  const c = await SmtpConn.open(port, 10_000);
  try {
    await c.reply(REPLY_TIMEOUT_MS);
    await c.expect("EHLO probe.src.test", 250, REPLY_TIMEOUT_MS);
    while (!stop()) {
      const t0 = performance.now();
      await c.expect("NOOP", 250, REPLY_TIMEOUT_MS);
      samples.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await c.quit();
  }
  return Float64Array.from(samples);
}
