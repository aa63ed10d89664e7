// Mail we DKIM-sign is put in a form no later hop needs to change before it is signed: 8-bit
// MIME parts re-encoded as 7-bit (mime/seven-bit.ts) and lines over 998 octets wrapped
// (mime/wrap-lines.ts). Otherwise a next hop without 8BITMIME would get a converted body and
// every receiver would see a broken signature (RFC 6376 5.3 asks signers to do exactly this
// for 8-bit data that may be converted on the way). Only such messages pay for it: the
// accept-time scan says which.
//
// The converted copy is collected like the original, into a spool file under a temporary
// name when it is large, renamed to the queue id once it is durable.

import { renameSync } from "node:fs";
import type { Readable } from "node:stream";
import { hopSafe } from "../mime/hop-safe.ts";
import { shapeOf } from "../mime/scan.ts";
import type { Spool } from "../queue/spool.ts";
import { BodyCollector } from "./body.ts";

/** A collector whose spool file gets its queue id's name only once it is durable. */
class RenamedCollector extends BodyCollector {
  private renamed = false;

  constructor(
    private readonly spoolDir: Spool,
    private readonly tempId: string,
    private readonly finalId: string,
    inlineMax: number,
    maxSize: number,
  ) {
    // The original passed the header limits and NUL policy; the copy only re-encodes it.
    super(spoolDir, tempId, inlineMax, maxSize, { maxHeaderSize: Infinity, maxHeaderSection: Infinity, nulBytes: "strip" });
  }

  override async finish(): Promise<Uint8Array | null> {
    const inline = await super.finish();
    if (inline === null) {
      renameSync(this.spoolDir.pathOf(this.tempId), this.spoolDir.pathOf(this.finalId));
      this.renamed = true;
      await this.spoolDir.syncDir();
    }
    return inline;
  }

  override discard(): void {
    super.discard();
    if (this.renamed) this.spoolDir.remove(this.finalId);
  }
}

/**
 * The message of `body` in its signable form, or null when that failed (the caller keeps the
 * original). On success the original is discarded.
 */
export async function signableCopy(body: BodyCollector, spool: Spool, id: string, inlineMax: number, maxSize: number): Promise<BodyCollector | null> {
  const { body: stream, failure } = await hopSafe(body.message() as Readable, body.scan.shape);
  // Quoted-printable can triple the size of 8-bit text; past that something is wrong.
  const copy = new RenamedCollector(spool, `${id}.signable`, id, inlineMax, maxSize * 4);
  try {
    for await (const chunk of stream) copy.push(chunk as Buffer);
    copy.end();
    // refused: over the size, or a write failed (a full disk must not leave an empty message).
    if (copy.refused || failure()) throw failure() ?? new Error("the converted message is too large or could not be stored");
  } catch {
    copy.discard();
    return null;
  }
  body.discard();
  return copy;
}

/** The same for a message whole in memory (the send API): the bytes as they are when nothing needs doing or the conversion failed. */
export async function signableBytes(bytes: Buffer): Promise<Buffer> {
  const { body } = await hopSafe(bytes, shapeOf(bytes));
  // Nothing to do, or only lines to wrap (wrapBytes gives a Buffer): no stream to read.
  if (body instanceof Uint8Array) return Buffer.isBuffer(body) ? body : Buffer.from(body);
  const chunks: Buffer[] = [];
  try {
    for await (const c of body) chunks.push(c as Buffer);
  } catch {
    return bytes;
  }
  return Buffer.concat(chunks);
}
