// Collects a DATA stream into the two parts the queue stores: the client's header section,
// kept in memory so content checks can add and remove headers, and the body, kept in memory
// up to inlineMax and spilled to a spool file beyond it. Also counts bytes against the size
// limit, notes bare LF / bare CR, and counts Received: headers (hops).

import { Readable } from "node:stream";
import { createReadStream } from "node:fs";
import type { Spool, SpoolWriter } from "../queue/spool.ts";
import { ContentScan } from "../mime/scan.ts";

const CR = 0x0d;
const LF = 0x0a;
/** A header section longer than this is stored as body: not inspected, not edited. */
export const HEADER_LIMIT = 256 * 1024;

export class BodyCollector {
  private headChunks: Uint8Array[] = [];
  private headLength = 0;
  private headTail: Buffer = Buffer.alloc(0);
  /** Set once the header section is complete; null if it was too long to keep apart. */
  private head: Uint8Array | null | undefined = undefined;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private file: SpoolWriter | null = null;
  private prev = -1;
  size = 0;
  bareNewline = false;
  overLimit = false;
  /** Received: headers the client sent, known once the header section is complete. */
  hops = 0;
  /** 8-bit octets and long lines, for delivery to decide on conversions (mime/scan.ts). */
  readonly scan = new ContentScan();

  constructor(
    private readonly spool: Spool,
    private readonly id: string,
    private readonly inlineMax: number,
    private readonly maxSize: number,
  ) {}

  push(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.size > this.maxSize) this.overLimit = true;
    if (!this.bareNewline) this.scanLineEndings(chunk);
    this.scan.push(chunk);
    // Past the limit the message is going to be refused: read on to keep the session in sync, keep nothing.
    if (this.overLimit) return;
    if (this.head === undefined) this.pushHead(chunk);
    else this.storeBody(chunk);
  }

  /** The client's data is complete: settles what was undecided at the last chunk's edge. */
  end(): void {
    if (this.head === undefined) this.closeHead(concat(this.headChunks, this.headLength), this.headLength);
    if (this.prev === CR) this.bareNewline = true;
  }

  /** The client's header section (latin1 text, CRLF line ends, with its blank line), or null if not kept apart. */
  headText(): string | null {
    return this.head ? Buffer.from(this.head).toString("latin1") : null;
  }

  /** The client's message as it arrived: header section then body. */
  message(): NodeJS.ReadableStream {
    const head = this.head ?? new Uint8Array(0);
    if (!this.file) return Readable.from([Buffer.from(head), Buffer.from(concat(this.chunks, this.buffered))]);
    const path = this.spool.pathOf(this.id);
    return Readable.from(
      (async function* () {
        yield Buffer.from(head);
        yield* createReadStream(path);
      })(),
    );
  }

  get bodyLength(): number {
    return this.buffered;
  }

  /** Makes the body durable: its bytes when inline, or null once the spool file is synced. */
  async finish(): Promise<Uint8Array | null> {
    if (!this.file) return concat(this.chunks, this.buffered);
    await this.file.commit();
    return null;
  }

  discard(): void {
    this.chunks = [];
    this.headChunks = [];
    this.file?.discard();
    this.file = null;
  }

  // Looks for the blank line only in the new bytes (plus the 3 before them), so a client
  // dripping its headers a byte at a time costs linear, not quadratic, work.
  private pushHead(chunk: Uint8Array): void {
    const before = this.headLength;
    const prevTail = this.headTail;
    this.headChunks.push(chunk);
    this.headLength += chunk.length;
    const window = Buffer.concat([prevTail, chunk]);
    this.headTail = window.subarray(Math.max(0, window.length - 3));
    let end = -1;
    if (before < 2 && this.headLength >= 2) {
      const first = concat(this.headChunks, this.headLength);
      if (first[0] === CR && first[1] === LF) end = 2;
    }
    if (end === -1) {
      const i = window.indexOf("\r\n\r\n");
      if (i !== -1) end = before - prevTail.length + i + 4;
    }
    if (end !== -1) {
      const all = concat(this.headChunks, this.headLength);
      this.closeHead(all, end);
      if (end < all.length) this.storeBody(all.subarray(end));
    } else if (this.headLength > HEADER_LIMIT) {
      // Too long to be a header section worth editing: everything is body from here on.
      const all = concat(this.headChunks, this.headLength);
      this.head = null;
      this.headChunks = [];
      this.storeBody(all);
    }
  }

  private closeHead(all: Uint8Array, end: number): void {
    this.head = all.slice(0, end);
    this.headChunks = [];
    // Counting Received: lines is how a relay notices a mail loop (RFC 5321 6.3).
    this.hops = (Buffer.from(this.head).toString("latin1").match(/^received:/gim) ?? []).length;
  }

  private storeBody(bytes: Uint8Array): void {
    this.buffered += bytes.length;
    if (this.file) return this.file.write(bytes);
    this.chunks.push(bytes);
    if (this.buffered > this.inlineMax) {
      this.file = this.spool.create(this.id);
      for (const c of this.chunks) this.file.write(c);
      this.chunks = [];
    }
  }

  // Walks line ends with the native indexOf rather than byte by byte: a 25 MiB body has
  // ~300k lines but 25M bytes.
  private scanLineEndings(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.prev === CR && chunk[0] !== LF) return void (this.bareNewline = true);
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
      if ((i === 0 ? this.prev : chunk[i - 1]) !== CR) return void (this.bareNewline = true);
    }
    for (let i = chunk.indexOf(CR); i !== -1 && i < chunk.length - 1; i = chunk.indexOf(CR, i + 1)) {
      if (chunk[i + 1] !== LF) return void (this.bareNewline = true);
    }
    this.prev = chunk[chunk.length - 1]!;
  }
}

export function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
