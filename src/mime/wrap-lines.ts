// Keeps every line of an outgoing message within SMTP's limit (RFC 5321 4.5.3.1.6: 998 octets
// before CRLF), like Postfix's smtp_line_length_limit, so a next hop never refuses or
// truncates it:
// - in the header section a long line is folded (RFC 5322 2.2.3) at the last space or tab
//   that fits; a line with no whitespace to fold at is broken with CRLF SP, which a reader
//   unfolds into the same field (with one space more);
// - in the body a long line is broken with CRLF.
// A break never splits a UTF-8 sequence. Work is linear and memory bounded: at most one
// line's worth of octets (plus the chunk in hand) is held at a time.

import { Transform, type TransformCallback } from "node:stream";
import { MAX_LINE } from "./scan.ts";

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from("\r\n");
const FOLD = Buffer.from("\r\n ");

/** The largest cut at or before `at` (and after `from`) that does not split a UTF-8 sequence. */
function charBoundary(buf: Uint8Array, from: number, at: number): number {
  let cut = at;
  // At most three continuation octets (10xxxxxx) follow a lead octet.
  for (let i = 0; i < 3 && cut > from + 1 && (buf[cut]! & 0xc0) === 0x80; i++) cut--;
  return cut;
}

export class LineWrapper {
  private inHead = true;
  /** Header mode: the current line so far (a fold needs to look back for whitespace). */
  private line: Buffer = Buffer.alloc(0);
  /** Header mode: octets already sent on the current output line ahead of `line` (an inserted space). */
  private lead = 0;
  /** Body mode: octets on the current output line. */
  private lineLength = 0;
  /** A CR ended the last chunk; whether it ends a line depends on the next octet. */
  private heldCr = false;

  push(input: Uint8Array): Buffer[] {
    let chunk = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (this.heldCr) {
      this.heldCr = false;
      chunk = Buffer.concat([Buffer.of(CR), chunk]);
    }
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.inHead) pos = this.headSegment(chunk, pos, out);
      else pos = this.bodySegment(chunk, pos, out);
    }
    return out;
  }

  end(): Buffer[] {
    const out: Buffer[] = [];
    if (this.heldCr) {
      this.heldCr = false;
      if (this.inHead) this.line = Buffer.concat([this.line, Buffer.of(CR)]);
      else out.push(Buffer.of(CR));
    }
    if (this.inHead && this.line.length) {
      this.foldLong(out, true);
      out.push(this.line);
      this.line = Buffer.alloc(0);
    }
    return out;
  }

  /** Takes octets up to and including the next LF into the current header line. */
  private headSegment(chunk: Buffer, pos: number, out: Buffer[]): number {
    const lf = chunk.indexOf(LF, pos);
    const end = lf === -1 ? chunk.length : lf + 1;
    let piece = chunk.subarray(pos, end);
    if (lf === -1 && piece[piece.length - 1] === CR) {
      this.heldCr = true;
      piece = piece.subarray(0, piece.length - 1);
    }
    this.line = this.line.length ? Buffer.concat([this.line, piece]) : Buffer.from(piece);
    if (lf === -1) {
      this.foldLong(out, false);
      return chunk.length;
    }
    const content = this.lead + this.line.length - (this.line.length >= 2 && this.line[this.line.length - 2] === CR ? 2 : 1);
    // The empty line ends the header section (RFC 5322 2.1).
    if (content === 0) this.inHead = false;
    else this.foldLong(out, true);
    out.push(this.line);
    this.line = Buffer.alloc(0);
    this.lead = 0;
    return end;
  }

  /**
   * Emits the front of the current header line while it is too long: up to the last
   * whitespace that fits (the whitespace starts the continuation line), else as much as fits
   * and CRLF SP. `complete`: the line's terminator (if any) is in the buffer.
   */
  private foldLong(out: Buffer[], complete: boolean): void {
    for (;;) {
      const line = this.line;
      let content = line.length;
      if (complete && line[content - 1] === LF) content -= content >= 2 && line[content - 2] === CR ? 2 : 1;
      const room = MAX_LINE - this.lead;
      if (content <= room) return;
      // Fold before whitespace, but not before the line's first other octet: a continuation
      // line of whitespace alone is not allowed (RFC 5322 3.2.2).
      let first = 0;
      while (first < line.length && (line[first] === 0x20 || line[first] === 0x09)) first++;
      let at = -1;
      for (let i = room; i > first; i--) {
        if (line[i] === 0x20 || line[i] === 0x09) {
          at = i;
          break;
        }
      }
      if (at !== -1) {
        out.push(line.subarray(0, at), CRLF);
        this.line = line.subarray(at);
        this.lead = 0;
      } else {
        const cut = charBoundary(line, 0, room);
        out.push(line.subarray(0, cut), FOLD);
        this.line = line.subarray(cut);
        // The inserted space starts the new line.
        this.lead = 1;
      }
    }
  }

  /** Passes body octets up to the next LF, breaking the line with CRLF where it gets too long. */
  private bodySegment(chunk: Buffer, pos: number, out: Buffer[]): number {
    const lf = chunk.indexOf(LF, pos);
    let end = lf === -1 ? chunk.length : lf + 1;
    let contentEnd = lf === -1 ? end : lf > pos && chunk[lf - 1] === CR ? lf - 1 : lf;
    if (lf === -1 && chunk[end - 1] === CR) {
      this.heldCr = true;
      end--;
      contentEnd--;
    }
    let from = pos;
    while (this.lineLength + (contentEnd - from) > MAX_LINE) {
      const cut = charBoundary(chunk, from, from + (MAX_LINE - this.lineLength));
      out.push(chunk.subarray(from, cut), CRLF);
      this.lineLength = 0;
      from = cut;
    }
    if (end > from) out.push(chunk.subarray(from, end));
    this.lineLength = lf === -1 ? this.lineLength + (end - from) : 0;
    return lf === -1 ? chunk.length : end;
  }
}

/** LineWrapper over bytes whole in memory. */
export function wrapBytes(bytes: Uint8Array): Buffer {
  const w = new LineWrapper();
  return Buffer.concat([...w.push(bytes), ...w.end()]);
}

/** LineWrapper as a stream stage. */
export function lineWrapStream(): Transform {
  const wrapper = new LineWrapper();
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      for (const b of wrapper.push(chunk)) this.push(b);
      done();
    },
    flush(done: TransformCallback) {
      for (const b of wrapper.end()) this.push(b);
      done();
    },
  });
}
