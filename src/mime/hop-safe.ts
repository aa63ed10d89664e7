// A message in the form every next hop takes unchanged: 8-bit MIME parts re-encoded as 7-bit
// (seven-bit.ts; RFC 6152: 8-bit data only to a hop that offers 8BITMIME) and lines over 998
// octets wrapped (wrap-lines.ts, RFC 5321 4.5.3.1.6). Delivery uses it for a hop that lacks
// 8BITMIME; the DKIM signer uses it before signing, so no hop converts signed mail later.

import { pipeline, Readable } from "node:stream";
import { sevenBit } from "./seven-bit.ts";
import { lineWrapStream, wrapBytes } from "./wrap-lines.ts";

export interface HopSafe<B> {
  readonly body: B;
  /** Why the 7-bit conversion failed, once the body has been read; null when it did not (or none ran). */
  readonly failure: () => Error | null;
}

/** What needs doing, from the accept-time scan (mime/scan.ts). */
export interface Needs {
  readonly eightBit: boolean;
  readonly longLines: boolean;
}

export async function hopSafe(body: Readable, needs: Needs): Promise<HopSafe<Readable>>;
export async function hopSafe(body: Uint8Array | Readable, needs: Needs): Promise<HopSafe<Uint8Array | Readable>>;
export async function hopSafe(body: Uint8Array | Readable, needs: Needs): Promise<HopSafe<Uint8Array | Readable>> {
  let out = body;
  let failure: () => Error | null = () => null;
  if (needs.eightBit) {
    const converted = await sevenBit(out instanceof Uint8Array ? Readable.from([out]) : out);
    out = converted.stream;
    failure = converted.failure;
  }
  if (needs.longLines) out = out instanceof Uint8Array ? wrapBytes(out) : pipeline(out, lineWrapStream(), () => {});
  return { body: out, failure };
}
