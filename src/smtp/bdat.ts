// BDAT (RFC 3030 CHUNKING): the message arrives as chunks of a stated number of octets, no
// dot-stuffing. One BdatTransfer per message: the stream the onData hook reads (the same
// hook, and so the same checks, as DATA), how much has arrived, and the onData verdict.

import { PassThrough } from "node:stream";
import type { SMTPServerDataStream } from "smtp-server";

export interface BdatCommand {
  readonly size: number;
  readonly last: boolean;
}

// bdat-cmd = "BDAT" SP chunk-size [SP end-marker]; 15 digits is already far past any size limit.
const BDAT = /^BDAT ([0-9]{1,15})(?: (LAST))?$/i;

export function parseBdat(line: string): BdatCommand | null {
  const m = BDAT.exec(line.trim());
  return m ? { size: Number(m[1]), last: m[2] !== undefined } : null;
}

/** The onData hook's answer: an error with responseCode, or the 250 text. */
export type Outcome = { readonly err: (Error & { responseCode?: number }) | null | undefined; readonly message: string | undefined };

export class BdatTransfer {
  readonly stream: SMTPServerDataStream;
  /** Message octets received so far (those past the limit are counted, not kept). */
  received = 0;
  /** The message went past the size limit: the rest is discarded and it is refused. */
  oversize = false;
  /** The chunk being read is the last one (or the message is over the limit). */
  ending = false;
  outcome: Outcome | null = null;

  constructor(readonly maxSize: number) {
    const stream = new PassThrough() as unknown as SMTPServerDataStream;
    stream.byteLength = 0;
    stream.sizeExceeded = false;
    this.stream = stream;
  }

  /** A new chunk of `size` octets is announced; false when it takes the message over the limit. */
  announce(cmd: BdatCommand): void {
    if (this.received + cmd.size > this.maxSize) this.oversize = true;
    this.ending = cmd.last || this.oversize;
  }

  /** Octets of the chunk: written to the stream unless over the limit; `next` once taken. */
  take(bytes: Buffer, next: () => void): void {
    this.received += bytes.length;
    if (this.oversize || this.stream.destroyed) return next();
    if (this.stream.write(bytes)) return next();
    this.stream.once("drain", next);
  }

  /** The message is complete (or over the limit): the onData hook gets its end. */
  end(): void {
    this.stream.byteLength = this.received;
    this.stream.sizeExceeded = this.oversize;
    this.stream.end();
  }

  /** RSET, EHLO or a closed connection in the middle of the message: nothing is queued. */
  abort(): void {
    if (this.stream.destroyed || this.stream.writableEnded) return;
    const err = Object.assign(new Error("BDAT transaction abandoned"), { code: "EABORTED" });
    this.stream.destroy(this.stream.listenerCount("error") ? err : undefined);
  }
}
