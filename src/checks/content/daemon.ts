// What the scanner clients (spamd, clamd) share: one bounded request/reply exchange with a
// daemon (connect over TCP or a unix socket, stream the request with backpressure, collect the
// reply, all under one deadline; whatever goes wrong ends in a rejected promise, never a hang or
// a leaked socket), and the fail-open error reporting.

import { connect, type Socket } from "node:net";

export type ScannerTarget = { readonly host: string; readonly port: number } | { readonly path: string };

/** Replies longer than this are not from a daemon we know: spamd and clamd answer in a few lines. */
const MAX_REPLY = 64 * 1024;

export function describeTarget(target: ScannerTarget): string {
  return "path" in target ? target.path : `${target.host}:${target.port}`;
}

/** Writes to the daemon, waiting for the socket to drain; throws Closed once the exchange is over. */
export interface Sink {
  write(bytes: Uint8Array): Promise<void>;
}

class Closed extends Error {}

export interface Exchange {
  readonly target: ScannerTarget;
  /** For connect, send and the whole reply together. */
  readonly timeoutMs: number;
  readonly send: (sink: Sink) => Promise<void>;
  /** True once the reply is whole, for daemons that may keep the connection open after it. */
  readonly complete?: (reply: Buffer) => boolean;
}

/**
 * Resolves with what the daemon sent before closing (or once `complete` says the reply is
 * whole). A daemon may answer and hang up before reading the whole request (clamd over its
 * size limit): the reply it sent still counts, and the parser decides whether it is whole.
 */
export function exchange(x: Exchange): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = "path" in x.target ? connect({ path: x.target.path }) : connect({ host: x.target.host, port: x.target.port });
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;

    const done = (err: Error | null, partialCounts: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err && !(partialCounts && length > 0)) reject(err);
      else resolve(Buffer.concat(chunks, length));
    };

    const timer = setTimeout(() => done(new Error(`no complete answer within ${x.timeoutMs} ms`), false), x.timeoutMs);

    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length > MAX_REPLY) return done(new Error(`reply longer than ${MAX_REPLY} bytes`), false);
      if (x.complete?.(Buffer.concat(chunks, length))) done(null, true);
    });
    socket.on("end", () => done(null, true));
    socket.on("error", (err) => done(err, true));
    socket.on("close", () => done(new Error("connection closed without a reply"), true));
    socket.once("connect", () => {
      x.send(sinkFor(socket)).catch((err: unknown) => {
        // A write into a connection that is going away is not the answer: its close or error decides.
        if (!(err instanceof Closed)) done(err instanceof Error ? err : new Error(String(err)), false);
      });
    });
  });
}

function sinkFor(socket: Socket): Sink {
  return {
    async write(bytes) {
      if (socket.destroyed || socket.writableEnded) throw new Closed();
      if (socket.write(bytes)) return;
      await new Promise<void>((resolve) => {
        const go = () => {
          socket.off("drain", go);
          socket.off("close", go);
          resolve();
        };
        socket.on("drain", go);
        socket.on("close", go);
      });
      if (socket.destroyed) throw new Closed();
    },
  };
}

/**
 * Feeds the message to `each` in pieces of at most `max` bytes, without copying: a 25 MiB
 * message kept in memory arrives as one chunk. Returns the number of bytes seen.
 */
export async function forEachPiece(message: NodeJS.ReadableStream, max: number, each: (piece: Uint8Array) => Promise<void>): Promise<number> {
  let total = 0;
  for await (const chunk of message) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk;
    for (let off = 0; off < bytes.length; off += max) await each(bytes.subarray(off, off + max));
    total += bytes.length;
  }
  return total;
}

/** Hands a scanner failure to the caller's callback, which must not make the check throw. */
export function tell(onError: (err: Error) => void, err: Error): void {
  try {
    onError(err);
  } catch {
    // The caller's logger failing must not turn a fail-open check into a thrown one.
  }
}

/** Daemon text fit for an error message or a reply line: printable ASCII, bounded. */
export function printable(s: string, max = 200): string {
  return s.replace(/[^\x20-\x7e]/g, "?").slice(0, max);
}

/** Closes a message stream we may have stopped reading (or never started): frees its file. */
export function release(message: NodeJS.ReadableStream): void {
  const s = message as NodeJS.ReadableStream & { destroy?: () => void };
  if (typeof s.destroy === "function") s.destroy();
}
