// A whole message as the queue keeps it: header section (with its blank line) and body.

const SEPARATOR = Buffer.from("\r\n\r\n");

/** Splits raw message bytes after the blank line that ends the header section. */
export function splitMessage(bytes: Uint8Array): { head: Uint8Array; body: Uint8Array } {
  const at = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(SEPARATOR);
  const end = at === -1 ? bytes.length : at + SEPARATOR.length;
  return { head: bytes.subarray(0, end), body: bytes.subarray(end) };
}
