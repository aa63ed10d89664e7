// The optional SpamAssassin check: a spamd client (SPAMC/1.5, SYMBOLS command) and the content
// check that turns its score into a verdict and X-Spam-* headers.
//
// Hand-written rather than taken from npm: the spamd clients there ("spamc", "node-spamd") are
// unmaintained, buffer the whole message as a string, and have no timeout. The protocol is a
// request line, a Content-length header and the message; the reply is a status line, a "Spam:"
// header and the rule names. See spamd/PROTOCOL in the SpamAssassin sources.

import { ACCEPT, reject } from "../../verdict.ts";
import type { ContentCheck, ContentResult } from "../types.ts";
import { describeTarget, exchange, forEachPiece, printable, release, tell, type ScannerTarget } from "./daemon.ts";

export interface SpamdReport {
  /** spamd's own opinion, against its required score. */
  readonly spam: boolean;
  readonly score: number;
  readonly required: number;
  /** Names of the rules that hit, as sent by spamd, minus any that are not plain rule names. */
  readonly symbols: readonly string[];
}

export interface SpamCheckOptions {
  readonly target: ScannerTarget;
  /** For connect, sending the message and spamd's answer together. */
  readonly timeoutMs: number;
  /** At or above this score the message is refused: 550 5.7.1. */
  readonly rejectScore: number;
  /** At or above this score (and below rejectScore) the message is marked X-Spam-Flag: YES. */
  readonly tagScore: number;
  /**
   * Larger messages are passed unscanned, like spamc's --max-size (default 500 KB): spamd holds
   * the whole message in memory and takes minutes over a 25 MiB one, and spam is small.
   */
  readonly maxSize?: number;
  /** Told about every failure; the message is accepted unscanned (fail open). */
  readonly onError: (err: Error) => void;
}

const DEFAULT_MAX_SIZE = 500 * 1024;
/** RFC 5322 2.1.1: a line must not be longer than 998 characters. We cannot fold: `add` takes single lines. */
const MAX_HEADER_LINE = 998;
const PIECE = 64 * 1024;

/** Asks spamd to score a message (SYMBOLS). `size` must be the exact length of `message`: it is sent first. */
export async function spamdSymbols(target: ScannerTarget, timeoutMs: number, message: NodeJS.ReadableStream, size: number): Promise<SpamdReport> {
  try {
    const reply = await exchange({
      target,
      timeoutMs,
      send: async (sink) => {
        await sink.write(Buffer.from(`SYMBOLS SPAMC/1.5\r\nContent-length: ${size}\r\n\r\n`, "latin1"));
        const sent = await forEachPiece(message, PIECE, (piece) => sink.write(piece));
        // spamd reads exactly Content-length bytes: a mismatch would hang it or corrupt the message.
        if (sent !== size) throw new Error(`message was ${sent} bytes, not the ${size} announced`);
      },
    });
    return parseSpamdReply(reply);
  } finally {
    release(message);
  }
}

/** True when spamd answers PING with PONG. */
export async function spamdPing(target: ScannerTarget, timeoutMs: number): Promise<boolean> {
  const reply = await exchange({ target, timeoutMs, send: (sink) => sink.write(Buffer.from("PING SPAMC/1.5\r\n\r\n", "latin1")) });
  return /^SPAMD\/\d+\.\d+ 0 PONG\r\n/.test(reply.toString("latin1"));
}

/** Parses spamd's reply to SYMBOLS or CHECK; throws on an error status or anything malformed. */
export function parseSpamdReply(reply: Buffer): SpamdReport {
  const text = reply.toString("latin1");
  const headEnd = text.indexOf("\r\n\r\n");
  const lines = (headEnd === -1 ? text : text.slice(0, headEnd)).split("\r\n");
  const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/.exec(lines[0] ?? "");
  if (!status) throw new Error(`spamd sent a malformed reply: ${printable(lines[0] ?? "")}`);
  if (status[1] !== "0") throw new Error(`spamd answered ${status[1]} ${printable(status[2] ?? "")}`);
  if (headEnd === -1) throw new Error("spamd's reply ended in its header section");

  let verdict: RegExpExecArray | null = null;
  let bodyLength: number | null = null;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "spam") verdict = /^(True|False|Yes|No) ; (-?\d+(?:\.\d+)?) \/ (-?\d+(?:\.\d+)?)$/i.exec(value);
    else if (name === "content-length") bodyLength = /^\d+$/.test(value) ? Number(value) : NaN;
  }
  if (!verdict) throw new Error("spamd's reply has no valid Spam: header");
  const body = text.slice(headEnd + 4);
  if (bodyLength !== null && body.length !== bodyLength) throw new Error(`spamd's reply body is ${body.length} bytes, not the ${bodyLength} announced`);
  return {
    spam: /^(true|yes)$/i.test(verdict[1]!),
    score: Number(verdict[2]),
    required: Number(verdict[3]),
    symbols: body
      .split(",")
      .map((s) => s.trim())
      .filter((s) => /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/.test(s)),
  };
}

/**
 * Scores each message with spamd: refuse at rejectScore, mark at tagScore. An unreachable,
 * slow or confused spamd lets mail through unscanned (the plan's fail-open rule for optional
 * scanners: losing mail because a filter is down is worse than letting spam by) and is reported
 * through onError.
 */
export function spamCheck(opts: SpamCheckOptions): ContentCheck {
  const maxSize = opts.maxSize ?? DEFAULT_MAX_SIZE;
  return async (ctx): Promise<ContentResult> => {
    if (ctx.size > maxSize) return { verdict: ACCEPT };
    let report: SpamdReport;
    try {
      report = await spamdSymbols(opts.target, opts.timeoutMs, ctx.message(), ctx.size);
    } catch (err) {
      tell(opts.onError, new Error(`spamd at ${describeTarget(opts.target)}: ${(err as Error).message}`, { cause: err }));
      return { verdict: ACCEPT };
    }
    if (report.score >= opts.rejectScore) return { verdict: reject(550, "5.7.1", "Message rejected as spam", "spam") };
    return { verdict: ACCEPT, add: spamHeaders(report, opts.tagScore) };
  };
}

/** The X-Spam-* header lines for a message we accept; `required` is our tagging threshold. */
export function spamHeaders(report: SpamdReport, tagScore: number): string[] {
  const score = report.score.toFixed(1);
  const flagged = report.score >= tagScore;
  const status = `X-Spam-Status: ${flagged ? "Yes" : "No"}, score=${score} required=${tagScore.toFixed(1)} tests=`;
  const tests = fitList(report.symbols, MAX_HEADER_LINE - status.length);
  return flagged ? ["X-Spam-Flag: YES", `X-Spam-Score: ${score}`, status + tests] : [status + tests];
}

/** The names joined by commas, cut at a whole name (ending ",...") to fit in `room` characters. */
function fitList(names: readonly string[], room: number): string {
  if (names.length === 0) return "none";
  const all = names.join(",");
  if (all.length <= room) return all;
  let out = "";
  for (const name of names) {
    const next = out ? `${out},${name}` : name;
    if (next.length + 4 > room) break;
    out = next;
  }
  return out ? `${out},...` : "...";
}
