// What one message's sender authentication may spend, beside the header trimming of
// auth-header.ts: the event loop, in slices (pacedMessage, under a Pacer shared by all
// messages), and DNS (messageResolver: each name looked up once, all keys at once, a bounded
// number of lookups, and nothing more once the check's deadline has passed).

import { Readable } from "node:stream";
import { DnsError } from "../../dns/resolver.ts";

/** Bytes mailauth gets at a time: a slice of body hashing (a few hashes of 16 KiB) is ~1-2 ms. */
const SLICE = 16 * 1024;
/** Lookups per message: SPF allows 10 with DNS mechanisms, a few more per MX; the keys; DMARC. */
const MAX_LOOKUPS = 100;

/**
 * Shares the event loop between sender authentication's bulk work (mailauth reading and hashing
 * the message, synchronous per slice) and everything else. Each slice is followed by a turn of
 * the event loop; while other work is waiting, all messages together get at most `share` of the
 * time (a token bucket of milliseconds), so a client sending signature-heavy messages slows its
 * own messages, not the other sessions. An idle loop gives the bucket back at once.
 */
export class Pacer {
  private tokens: number;
  private last: number;

  constructor(
    private readonly share = 0.1,
    private readonly burstMs = 50,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burstMs;
    this.last = now();
  }

  /** Charges `workMs` just spent; resolves when the next slice may run. */
  async after(workMs: number): Promise<void> {
    const t = this.now();
    this.tokens = Math.min(this.burstMs, this.tokens + (t - this.last) * this.share) - workMs;
    this.last = t;
    const before = this.now();
    await new Promise<void>((resolve) => setImmediate(resolve));
    // Nothing else ran in that turn: nobody is waiting for the loop, the budget is not needed.
    if (this.now() - before < 0.2) this.tokens = Math.max(this.tokens, 0);
    if (this.tokens < 0) await new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(-this.tokens / this.share)));
  }
}

/** The message as mailauth reads it: `head`, then the body of `message` (after its header section), in slices. */
export function pacedMessage(head: string, message: NodeJS.ReadableStream, pacer: Pacer, signal: AbortSignal): Readable {
  async function* slices(): AsyncGenerator<Buffer> {
    const feed = async function* (buf: Buffer) {
      for (let i = 0; i < buf.length; i += SLICE) {
        if (signal.aborted) throw new Error("sender authentication stopped at its deadline");
        const started = performance.now();
        yield buf.subarray(i, i + SLICE);
        await pacer.after(performance.now() - started);
      }
    };
    yield* feed(Buffer.from(head, "latin1"));
    // The client's own header section is skipped up to its empty line (RFC 5322 2.1), found with
    // the native indexOf over each chunk and the 3 bytes before it.
    let inHead = true;
    let tail: Buffer = Buffer.alloc(0);
    let first = true;
    for await (const chunk of message as AsyncIterable<Buffer>) {
      let buf: Buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      if (inHead) {
        const window: Buffer = tail.length ? Buffer.concat([tail, buf]) : buf;
        // An empty header section: the message starts with its empty line.
        const start = first && window[0] === 0x0d && window[1] === 0x0a ? 2 : window.indexOf("\r\n\r\n") + 4;
        first = false;
        if (start < 4 && start !== 2) {
          tail = window.subarray(Math.max(0, window.length - 3));
          continue;
        }
        buf = window.subarray(start);
        inHead = false;
      }
      yield* feed(buf);
    }
  }
  // One slice in flight: the time between two of them is mailauth's work on one.
  return Readable.from(slices(), { highWaterMark: 1 });
}

type Lookup = (name: string, rrtype: string) => Promise<unknown>;

/**
 * A resolver for one message: each (name, type) asked once, `prefetch` starting lookups before
 * mailauth gets to them (mailauth asks for keys one signature at a time), at most MAX_LOOKUPS,
 * and every lookup pending or new failing with ETIMEOUT once `signal` fires.
 */
export function messageResolver(base: Lookup, signal: AbortSignal): { lookup: Lookup; prefetch(names: readonly string[], rrtype: string): void } {
  const memo = new Map<string, Promise<unknown>>();
  const stopped = new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(new DnsError("ETIMEOUT", "(deadline)")), { once: true }));
  stopped.catch(() => {});
  const lookup: Lookup = (name, rrtype) => {
    const key = `${rrtype.toUpperCase()} ${name.toLowerCase().replace(/\.$/, "")}`;
    const known = memo.get(key);
    if (known) return known;
    if (signal.aborted) return Promise.reject(new DnsError("ETIMEOUT", name));
    if (memo.size >= MAX_LOOKUPS) return Promise.reject(new DnsError("ESERVFAIL", name));
    const p = Promise.race([base(name, rrtype), stopped]);
    p.catch(() => {});
    memo.set(key, p);
    return p;
  };
  return { lookup, prefetch: (names, rrtype) => names.forEach((n) => void lookup(n, rrtype).catch(() => {})) };
}
