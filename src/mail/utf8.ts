// UTF-8 validity of raw protocol bytes. RFC 3629 section 3 forbids overlong forms, the
// surrogate range and code points above U+10FFFF, and a sequence cut short is no character
// at all; the WHATWG decoder in fatal mode refuses exactly those, natively.

const strict = new TextDecoder("utf-8", { fatal: true });

export function isAscii(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! > 0x7f) return false;
  return true;
}

export function isValidUtf8(bytes: Uint8Array): boolean {
  if (isAscii(bytes)) return true;
  try {
    strict.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
