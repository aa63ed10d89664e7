// What delivery needs to know about a message's bytes, learnt once while they stream in:
// whether any octet is 8-bit (a next hop without 8BITMIME needs a conversion, RFC 6152) and
// whether any line is longer than SMTP allows (RFC 5321 4.5.3.1.6: 998 octets before CRLF).
// Stored with the message, so the common case (7-bit, short lines) costs nothing at delivery.

import { isAscii } from "node:buffer";

/** RFC 5321 4.5.3.1.6: a line holds at most 998 octets, CRLF not counted. */
export const MAX_LINE = 998;
const LF = 0x0a;

export interface ContentShape {
  /** Some octet is above 127. */
  readonly eightBit: boolean;
  /** Some line is longer than MAX_LINE octets. */
  readonly longLines: boolean;
}

export class ContentScan {
  private eightBit = false;
  private longLines = false;
  /** Octets of the current line seen in earlier chunks. */
  private carried = 0;
  private lastByte = -1;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    // Native and vectorised: a 25 MiB body takes about a millisecond.
    if (!this.eightBit && !isAscii(chunk)) this.eightBit = true;
    if (!this.longLines) this.scanLines(chunk);
    this.lastByte = chunk[chunk.length - 1]!;
  }

  get shape(): ContentShape {
    // An unterminated last line is content up to its end (a CR there may yet become CRLF).
    const tail = this.carried - (this.lastByte === 0x0d ? 1 : 0);
    return { eightBit: this.eightBit, longLines: this.longLines || tail > MAX_LINE };
  }

  /**
   * A line is short when an LF follows within MAX_LINE + 1 octets of its start (its CR
   * included). Looking back from the window's end for the last LF jumps a whole window at a
   * time, instead of one indexOf per line.
   */
  private scanLines(chunk: Uint8Array): void {
    const window = MAX_LINE + 1;
    // Where the current line starts, relative to this chunk (negative: it began earlier).
    let start = -this.carried;
    for (;;) {
      const last = start + window;
      if (last >= chunk.length) {
        const lf = chunk.lastIndexOf(LF);
        if (lf >= Math.max(start, 0)) start = lf + 1;
        this.carried = chunk.length - start;
        if (this.carried > window) this.longLines = true;
        return;
      }
      const lf = chunk.lastIndexOf(LF, last);
      if (lf < Math.max(start, 0)) {
        this.longLines = true;
        return;
      }
      start = lf + 1;
    }
  }
}

/** The shape of bytes that are whole in memory (the send API, reports). */
export function shapeOf(...parts: Uint8Array[]): ContentShape {
  const scan = new ContentScan();
  for (const p of parts) scan.push(p);
  return scan.shape;
}
