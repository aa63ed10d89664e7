// Collects a DATA stream (or the chunks of BDAT) into the two parts the queue stores: the
// client's header section, kept in memory so content checks can add and remove headers, and
// the body, kept in memory up to inlineMax and spilled to a spool file beyond it. Also counts
// bytes against the size limit, notes bare LF / bare CR, strips (or notes) NUL octets, holds
// the header section to its limits, and counts Received: headers (hops). A message that is
// going to be refused is read on (the session stays in sync) but nothing more of it is kept.

import { Readable } from "node:stream";
import { createReadStream } from "node:fs";
import type { Spool, SpoolWriter } from "../queue/spool.ts";
import { ContentScan } from "../mime/scan.ts";
import { HeaderScanner } from "./header-scan.ts";

const CR = 0x0d;
const LF = 0x0a;

export interface ContentLimits {
  /** One header field with its folded lines (Postfix's header_size_limit). */
  readonly maxHeaderSize: number;
  /** The whole header section. */
  readonly maxHeaderSection: number;
  /** NUL octets are removed ("strip") or make the message refused ("reject"). */
  readonly nulBytes: "strip" | "reject";
}

const DEFAULT_LIMITS: ContentLimits = { maxHeaderSize: 100 * 1024, maxHeaderSection: 1024 * 1024, nulBytes: "strip" };

export class BodyCollector {
  private headChunks: Uint8Array[] = [];
  private headLength = 0;
  /** Set once the header section is complete; null once it went over its limits. */
  private head: Uint8Array | null | undefined = undefined;
  private readonly scanner: HeaderScanner;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private file: SpoolWriter | null = null;
  private prev = -1;
  size = 0;
  bareNewline = false;
  overLimit = false;
  /** Received: headers the client sent, known once the header section is complete. */
  hops = 0;
  /** NUL octets were found (and, with nulBytes: strip, removed). */
  nul = false;
  /** A header field or the header section went over its limit. */
  headerTooLarge = false;
  /** Writing the body failed (disk full, I/O error): the message cannot be taken. */
  writeError: Error | null = null;
  /** 8-bit octets and long lines, for delivery to decide on conversions (mime/scan.ts). */
  readonly scan = new ContentScan();

  constructor(
    private readonly spool: Spool,
    private readonly id: string,
    private readonly inlineMax: number,
    private readonly maxSize: number,
    private readonly limits: ContentLimits = DEFAULT_LIMITS,
  ) {
    this.scanner = new HeaderScanner(limits.maxHeaderSize);
  }

  push(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.size > this.maxSize) this.overLimit = true;
    // RFC 5321 4.1.4 / RFC 6152: no NUL in SMTP content; a next hop that drops them before
    // parsing would read "<NUL>." as the end of the data.
    if (chunk.indexOf(0) !== -1) {
      this.nul = true;
      chunk = stripNul(chunk);
    }
    if (!this.bareNewline) this.scanLineEndings(chunk);
    this.scan.push(chunk);
    // A message that is going to be refused: read on to keep the session in sync, keep nothing.
    if (this.refused) return;
    try {
      if (this.head === undefined) this.pushHead(chunk);
      else this.storeBody(chunk);
    } catch (err) {
      this.failWrite(err);
    }
  }

  /** The client's data is complete: settles what was undecided at the last chunk's edge. */
  end(): void {
    if (this.head === undefined && !this.refused) {
      this.scanner.finish();
      try {
        this.splitHead();
      } catch (err) {
        this.failWrite(err);
      }
    }
    if (this.prev === CR) this.bareNewline = true;
  }

  /** The message will be refused whatever the checks say, so nothing more of it is kept. */
  get refused(): boolean {
    return this.overLimit || this.headerTooLarge || this.writeError !== null || (this.nul && this.limits.nulBytes === "reject");
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
    try {
      this.file?.discard();
    } catch {
      // Removing the partial file failed too (the disk is in trouble): start-up removes orphans.
    }
    this.file = null;
  }

  /** A write failed (ENOSPC, EIO...): remembered, and what was kept is dropped. */
  private failWrite(err: unknown): void {
    this.writeError = err instanceof Error ? err : new Error(String(err));
    this.discard();
  }

  // The scanner sees only the new bytes, so a client dripping its headers a byte at a time
  // costs linear, not quadratic, work.
  private pushHead(chunk: Uint8Array): void {
    this.headChunks.push(chunk);
    this.headLength += chunk.length;
    if (this.scanner.push(chunk)) return this.splitHead();
    if (this.scanner.fieldTooLarge || this.headLength > this.limits.maxHeaderSection) this.dropHead();
  }

  /** The scanner found the end of the header section: what follows it is body. */
  private splitHead(): void {
    const end = this.scanner.end;
    if (this.scanner.fieldTooLarge || end > this.limits.maxHeaderSection) return this.dropHead();
    const all = concat(this.headChunks, this.headLength);
    this.head = all.slice(0, end);
    this.headChunks = [];
    // Counting Received: lines is how a relay notices a mail loop (RFC 5321 6.3).
    this.hops = (Buffer.from(this.head).toString("latin1").match(/^received:/gim) ?? []).length;
    if (end < all.length) this.storeBody(all.subarray(end));
  }

  // Refused with 552 5.3.4 rather than stored as body, where the loop count and the removal
  // of forged Authentication-Results would not see it.
  private dropHead(): void {
    this.headerTooLarge = true;
    this.head = null;
    this.headChunks = [];
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

/** The bytes without their NUL octets (Postfix's message_strip_characters = \0). */
function stripNul(chunk: Uint8Array): Uint8Array {
  const out = new Uint8Array(chunk.length);
  let n = 0;
  for (let from = 0; from < chunk.length; ) {
    let nul = chunk.indexOf(0, from);
    if (nul === -1) nul = chunk.length;
    out.set(chunk.subarray(from, nul), n);
    n += nul - from;
    from = nul + 1;
  }
  return out.subarray(0, n);
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
