// The optional ClamAV check: a clamd client (INSTREAM) and the content check that refuses a
// message in which clamd finds a virus.
//
// Hand-written rather than the npm "clamscan" package: that one is a large wrapper around the
// clamscan/clamdscan binaries as well as the socket, with a known failure to report some clamd
// replies (a timed-out read resolves to null), and the protocol we need is a few lines: the
// command, length-prefixed chunks, a zero-length chunk, one reply line (clamd's manual, clamd(8)).

import { ACCEPT, reject } from "../../verdict.ts";
import type { ContentCheck, ContentResult } from "../types.ts";
import { describeTarget, exchange, forEachPiece, printable, release, tell, type ScannerTarget } from "./daemon.ts";

export type ClamdFinding = { readonly infected: false } | { readonly infected: true; readonly signature: string };

export interface VirusCheckOptions {
  readonly target: ScannerTarget;
  /** For connect, streaming the message and clamd's answer together. */
  readonly timeoutMs: number;
  /** Told about every failure; the message is accepted unscanned (fail open). */
  readonly onError: (err: Error) => void;
}

/** clamd reads chunks of any size up to StreamMaxLength; small ones keep backpressure meaningful. */
const PIECE = 64 * 1024;
const MAX_SIGNATURE = 64;

/**
 * Streams a message to clamd with INSTREAM. The "z" prefix asks for NUL-terminated replies, so a
 * reply is known to be whole when its NUL arrives, whether or not clamd has hung up yet.
 */
export async function clamdScan(target: ScannerTarget, timeoutMs: number, message: NodeJS.ReadableStream): Promise<ClamdFinding> {
  try {
    const reply = await exchange({
      target,
      timeoutMs,
      complete: (r) => r.includes(0),
      send: async (sink) => {
        await sink.write(Buffer.from("zINSTREAM\0", "latin1"));
        await forEachPiece(message, PIECE, async (piece) => {
          await sink.write(lengthPrefix(piece.length));
          await sink.write(piece);
        });
        await sink.write(lengthPrefix(0));
      },
    });
    return parseClamdReply(reply);
  } finally {
    release(message);
  }
}

/** True when clamd answers PING with PONG. */
export async function clamdPing(target: ScannerTarget, timeoutMs: number): Promise<boolean> {
  const reply = await exchange({ target, timeoutMs, complete: (r) => r.includes(0), send: (sink) => sink.write(Buffer.from("zPING\0", "latin1")) });
  return reply.toString("latin1") === "PONG\0";
}

/**
 * Parses clamd's reply to INSTREAM: "stream: OK", "stream: <signature> FOUND", or an error such
 * as "INSTREAM size limit exceeded. ERROR", which throws.
 */
export function parseClamdReply(reply: Buffer): ClamdFinding {
  const nul = reply.indexOf(0);
  if (nul === -1) throw new Error(`clamd's reply was cut short: ${printable(reply.toString("latin1"))}`);
  const line = reply.subarray(0, nul).toString("latin1").trimEnd();
  if (line === "stream: OK") return { infected: false };
  const found = /^stream: ([\s\S]+) FOUND$/.exec(line);
  if (found) return { infected: true, signature: signatureName(found[1]!) };
  throw new Error(`clamd answered: ${printable(line)}`);
}

/** A signature name safe to put in an SMTP reply: short, and only the characters ClamAV names use. */
export function signatureName(raw: string): string {
  const name = raw.replace(/[^A-Za-z0-9._:+-]/g, "_").slice(0, MAX_SIGNATURE);
  return name || "unknown";
}

/**
 * Scans each message with clamd and refuses it when a signature matches. An unreachable, slow or
 * failing clamd (including a message over its StreamMaxLength) lets mail through unscanned (the
 * plan's fail-open rule for optional scanners) and is reported through onError.
 */
export function virusCheck(opts: VirusCheckOptions): ContentCheck {
  return async (ctx): Promise<ContentResult> => {
    let finding: ClamdFinding;
    try {
      finding = await clamdScan(opts.target, opts.timeoutMs, ctx.message());
    } catch (err) {
      tell(opts.onError, new Error(`clamd at ${describeTarget(opts.target)}: ${(err as Error).message}`, { cause: err }));
      return { verdict: ACCEPT };
    }
    if (!finding.infected) return { verdict: ACCEPT };
    return { verdict: reject(554, "5.7.1", `Message rejected: virus found (${finding.signature})`, "virus") };
  };
}

function lengthPrefix(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
