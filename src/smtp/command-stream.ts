// The parser under a RelayConnection: smtp-server's SMTPStream with two changes.
//   - Command lines are split here rather than in the library, so the connection can ask how
//     many bytes the client sent after the line it is handling: RFC 2920 3.1 lets commands
//     such as EHLO and DATA only end a pipelined group, and a client that sent more behind
//     them did not wait for the reply (protocol synchronisation).
//   - A byte-count mode for BDAT chunks (RFC 3030): exactly the announced number of octets is
//     handed to the connection, with no dot-unstuffing and no look at their content.
// DATA content still goes through the library's own dot-unstuffing parser (_feedDataStream).
// State lives on the instance, and the one continuation (`next`) is made once per parser, so
// a connection costs no closure per command.

import { SMTPStream } from "smtp-server/lib/smtp-stream.js";

const LF = 0x0a;
const CR = 0x0d;
/** Commands dispatched in one go before yielding, so a chunk of pipelined commands cannot hog the loop. */
const MAX_SYNC_COMMANDS = 100;

type Done = (err?: Error | null) => void;

/** What the parser needs from its connection. */
export interface StreamOwner {
  /** A command line (without CRLF); call `next` when the next one may be read. */
  _onCommand(line: Buffer, next: () => void): void;
  /** Some of the current BDAT chunk's octets, in order; call `next` once they are taken. */
  chunkData(bytes: Buffer, next: () => void): void;
  /** The current chunk is complete; call `next` once its reply is sent. */
  chunkEnd(next: () => void): void;
  /** Bytes arrived from the client (`lineOpen`: a command line is left unfinished). */
  inputArrived(bytes: number, lineOpen: boolean): void;
  /** The DATA content ended (the final dot arrived). */
  contentEnded(): void;
}

export class CommandStream extends SMTPStream {
  /** Bytes of the unfinished command line, waiting for its LF. */
  private pending: Buffer | null = null;
  /** The input being worked on, and where the next command line starts in it. */
  private buf: Buffer | null = null;
  private pos = 0;
  /** The Writable callback of the input being worked on: more is read once it is called. */
  private done: Done | null = null;
  /** Length of the chunk the Writable handed us (as opposed to the library re-feeding its rest). */
  private inFlight = 0;
  private refeed = false;
  /** Octets of the current BDAT chunk still to come; -1 when not reading a chunk. */
  private chunkLeft = -1;
  private chunkEnding = false;
  private busy = false;
  private again = false;
  private readonly next: () => void;

  constructor(readonly owner: StreamOwner, options: { maxCommandLength?: number }) {
    super(options);
    this.next = () => this.pump();
  }

  override oncommand(command: Buffer, callback?: () => void): void {
    this.owner._onCommand(command, callback ?? noop);
  }

  /**
   * Bytes the client has sent that no command has consumed yet: the rest of the input being
   * worked on and input queued behind it.
   */
  pendingInput(): number {
    const rest = this.buf ? this.buf.length - this.pos : 0;
    const queued = this.writableLength - (this.done ? this.inFlight : 0);
    return rest + (this.pending?.length ?? 0) + Math.max(0, queued);
  }

  /** Up to `max` of those bytes, for the log. */
  peekPending(max: number): Buffer {
    const rest = this.buf ? this.buf.subarray(this.pos, this.pos + max) : Buffer.alloc(0);
    return rest.length ? rest : (this.pending ?? Buffer.alloc(0)).subarray(0, max);
  }

  /** Reads the next `size` octets as a BDAT chunk; call from the BDAT handler before its callback. */
  startChunk(size: number): void {
    this.chunkLeft = size;
  }

  override _write(chunk: Buffer, encoding: BufferEncoding | "buffer", done: Done): void {
    if (this.refeed) this.refeed = false;
    else {
      this.inFlight = chunk.length;
      if (chunk.length && !this.isClosed) this.owner.inputArrived(chunk.length, this.chunkLeft < 0 && !this._dataMode && chunk[chunk.length - 1] !== LF);
    }
    if (!chunk.length || this.isClosed) return done();
    if (this._dataMode && this.chunkLeft < 0) return super._write(chunk, encoding, done);
    this.buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    this.pos = 0;
    this.done = done;
    this.pump();
  }

  // The library calls _write again with what followed the final dot once the message is dealt with.
  override _endDataMode(chunk: Buffer | false, remainder: Buffer, callback: Done): void {
    this.refeed = true;
    this.owner.contentEnded();
    super._endDataMode(chunk, remainder, callback);
    // continue() may have run the re-feed synchronously, or it will run later: either way it is one call.
  }

  /** A command line left without CRLF when the input ends is not a command (RFC 5321 2.3.8). */
  override _flushData(): void {
    this.pending = null;
  }

  private pump(): void {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      for (let n = 0; ; n++) {
        this.again = false;
        if (this.isClosed || !this.buf) return this.finish();
        if (this.chunkEnding) {
          this.chunkEnding = false; // the connection called next(): the chunk's reply is out
          continue;
        }
        if (this.chunkLeft === 0) {
          this.chunkLeft = -1;
          this.chunkEnding = true;
          this.owner.chunkEnd(this.next);
        } else if (this.chunkLeft > 0) {
          const take = Math.min(this.chunkLeft, this.buf.length - this.pos);
          if (take === 0) return this.finish();
          const bytes = this.buf.subarray(this.pos, this.pos + take);
          this.pos += take;
          this.chunkLeft -= take;
          this.owner.chunkData(bytes, this.next);
        } else if (this._dataMode) {
          return this.toDataMode();
        } else {
          if (!this.nextLine()) return;
          if (n >= MAX_SYNC_COMMANDS && this.again) {
            setImmediate(resume, this);
            return;
          }
        }
        if (!this.again) return; // an asynchronous step: it calls next() when done
      }
    } finally {
      this.busy = false;
    }
  }

  /** Dispatches the next complete command line; false when there is none (or it is too long). */
  private nextLine(): boolean {
    const buf = this.buf!;
    const lf = buf.indexOf(LF, this.pos);
    const max = this._maxCommandLength;
    if (lf === -1) {
      const rest = buf.length - this.pos;
      if (rest > max) {
        this.finish(this._commandTooLong());
        return false;
      }
      // A copy, so an unfinished line does not keep the whole chunk it came in alive.
      this.pending = rest ? Buffer.from(buf.subarray(this.pos)) : null;
      this.finish();
      return false;
    }
    const end = lf > this.pos && buf[lf - 1] === CR ? lf - 1 : lf;
    if (end - this.pos > max) {
      this.finish(this._commandTooLong());
      return false;
    }
    const line = buf.subarray(this.pos, end);
    this.pos = lf + 1;
    this.oncommand(line, this.next);
    return true;
  }

  /** DATA was accepted: what follows goes to the library's dot-unstuffing parser. */
  private toDataMode(): void {
    const rest = this.buf!.subarray(this.pos);
    const done = this.done!;
    this.buf = null;
    this.done = null;
    super._write(rest, "buffer", done);
  }

  private finish(err?: Error): void {
    const done = this.done;
    this.buf = null;
    this.done = null;
    done?.(err);
  }
}

function noop(): void {}

function resume(stream: CommandStream): void {
  (stream as unknown as { next: () => void }).next();
}
