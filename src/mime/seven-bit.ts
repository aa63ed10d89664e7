// 8BITMIME downgrade (RFC 6152 3, RFC 2045 6): rewrites a message so that every MIME part is
// 7-bit, for a next hop that does not offer 8BITMIME (and for mail we DKIM-sign, so that no
// later hop has to change what was signed). mailsplit (zone-eu) parses the MIME structure as
// a stream; parts that are not touched pass through byte for byte.
// - A leaf part declared 8bit or binary is re-encoded: text (text/*, message/* leaves) as
//   quoted-printable, anything else as base64, and its Content-Transfer-Encoding changed.
// - A leaf declared 7bit (or nothing) that nevertheless holds 8-bit octets is re-encoded
//   too. Its first HOLD_LIMIT octets are held to find out; a part longer than that is
//   re-encoded without looking further (harmless: the encoding is lossless).
// - Multipart and message/rfc822 containers labelled 8bit or binary are relabelled 7bit. An
//   attached message (Content-Disposition: attachment) is not parsed by mailsplit; with 8-bit
//   content it is quoted-printable encoded like a text part, which RFC 2046 5.2.1 does not
//   foresee but every common reader decodes: better than sending 8-bit octets labelled 7bit.
// - A message without MIME-Version gets one when its body is re-encoded (RFC 2045 4).
// Header fields are left as they are: 8-bit octets in them need SMTPUTF8, not a conversion.
// Bounded: mailsplit limits a part's header block (1 MiB) and the number of parts (1000);
// past either the stream fails with an EMAXLEN error.

import { isAscii } from "node:buffer";
import { pipeline, Transform, type Readable, type TransformCallback } from "node:stream";
import type { Headers, MimeNode } from "@zone-eu/mailsplit";

const HOLD_LIMIT = 64 * 1024;
const CRLF = Buffer.from("\r\n");

type Piece = MimeNode | { type: "body" | "data"; value: Buffer; node?: MimeNode };

const isNode = (p: Piece): p is MimeNode => p.type === "node";
const declaredEightBit = (enc: string | false) => enc === "8bit" || enc === "binary";
const encoded = (enc: string | false) => enc === "base64" || enc === "quoted-printable";

class SevenBitParts extends Transform {
  /** Parts re-encoded so far. */
  converted = 0;
  private encoder: Transform | null = null;
  private encoding: MimeNode | null = null;
  private lastByte = -1;
  /** A 7bit-declared leaf, held until it shows an 8-bit octet, ends, or passes HOLD_LIMIT. */
  private held: { node: MimeNode; chunks: Buffer[]; size: number } | null = null;

  constructor() {
    super({ readableObjectMode: true, writableObjectMode: true });
  }

  override _transform(piece: Piece, _enc: BufferEncoding, done: TransformCallback): void {
    if (piece.type === "body") {
      if (this.encoder) return this.toEncoder(piece.value, done);
      if (this.held) return this.hold(piece.value, done);
      this.push(piece);
      return done();
    }
    this.closePart(() => {
      if (isNode(piece)) this.open(piece);
      else this.push(piece);
      done();
    });
  }

  override _flush(done: TransformCallback): void {
    this.closePart(() => done());
  }

  private open(node: MimeNode): void {
    const enc = node.encoding;
    // mailsplit parses an embedded message (a container) unless it is an attachment.
    if (node.multipart || (node.rfc822 && node.messageNode)) {
      // RFC 2045 6.4: a composite type is only ever 7bit, 8bit or binary; its parts carry the encoding.
      if (declaredEightBit(enc)) (node.headers as Headers).update("Content-Transfer-Encoding", "7bit");
      this.push(node);
    } else if (encoded(enc)) {
      this.push(node);
    } else if (declaredEightBit(enc)) {
      this.startEncoding(node);
    } else {
      this.held = { node, chunks: [], size: 0 };
    }
  }

  private hold(chunk: Buffer, done: TransformCallback): void {
    const held = this.held!;
    held.chunks.push(chunk);
    held.size += chunk.length;
    if (isAscii(chunk) && held.size <= HOLD_LIMIT) return done();
    this.held = null;
    this.startEncoding(held.node);
    for (const c of held.chunks.slice(0, -1)) this.encoder!.write(c);
    this.toEncoder(held.chunks[held.chunks.length - 1]!, done);
  }

  private startEncoding(node: MimeNode): void {
    const textual = /^(text|message)\//.test(node.contentType || "text/plain");
    const headers = node.headers as Headers;
    // New fields go below the existing ones: trace fields stay on top (RFC 5321 4.4).
    if (node.root && !headers.hasHeader("MIME-Version")) headers.add("MIME-Version", "1.0", Number.MAX_SAFE_INTEGER);
    if (!headers.hasHeader("Content-Transfer-Encoding")) headers.add("Content-Transfer-Encoding", "7bit", Number.MAX_SAFE_INTEGER);
    const encoder = node.getEncoder(textual ? "quoted-printable" : "base64") as Transform;
    this.converted++;
    this.push(node);
    this.encoder = encoder;
    this.encoding = node;
    this.lastByte = -1;
    encoder.on("data", (d: Buffer) => {
      if (d.length) this.lastByte = d[d.length - 1]!;
      this.push({ type: "body", node, value: d });
    });
    encoder.on("error", (err: Error) => this.destroy(err));
  }

  private toEncoder(chunk: Buffer, done: TransformCallback): void {
    if (this.encoder!.write(chunk)) done();
    else this.encoder!.once("drain", () => done());
  }

  /** Ends the part in progress: a held one goes out as it came, an encoder is drained. */
  private closePart(next: () => void): void {
    const held = this.held;
    if (held) {
      this.held = null;
      this.push(held.node);
      for (const value of held.chunks) this.push({ type: "body", node: held.node, value });
      return next();
    }
    const encoder = this.encoder;
    if (!encoder) return next();
    const node = this.encoding!;
    this.encoder = null;
    this.encoding = null;
    encoder.once("end", () => {
      // A part inside a multipart ends where its delimiter's CRLF starts; a whole message ends with a line break.
      if (!node.parentNode && this.lastByte !== 0x0a) this.push({ type: "body", node, value: CRLF });
      next();
    });
    encoder.end();
  }
}

export interface SevenBitStream {
  readonly stream: Readable;
  /** How many parts were re-encoded (known once the stream has ended). */
  converted(): number;
  /** Why the conversion failed, if it did (the stream then errors too). */
  failure(): Error | null;
}

/**
 * The message from `source` with every 8-bit part re-encoded as 7-bit. mailsplit (with libmime
 * and its charset tables, ~14 MiB) is loaded on first use: most relays never need it.
 */
export async function sevenBit(source: Readable): Promise<SevenBitStream> {
  const { Joiner, Splitter } = await import("@zone-eu/mailsplit");
  const parts = new SevenBitParts();
  const joiner = new Joiner();
  let failure: Error | null = null;
  pipeline(source, new Splitter({ defaultInlineEmbedded: true }), parts, joiner, (err) => {
    if (err) failure = err;
  });
  return { stream: joiner, converted: () => parts.converted, failure: () => failure };
}

/** mailsplit refused the structure (too many parts, a part's header too large): retrying will not help. */
export function isPermanentConversionFailure(err: Error | null): boolean {
  return (err as { code?: string } | null)?.code === "EMAXLEN";
}
