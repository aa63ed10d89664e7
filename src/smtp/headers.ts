// Header fields of a header section (RFC 5322 2.2), kept as their raw lines so that what we
// do not touch goes on byte for byte.

export interface HeaderField {
  readonly name: string;
  /** Unfolded value, leading whitespace trimmed. */
  readonly value: string;
  /** The field as it arrived, folding and CRLFs included. */
  readonly raw: string;
}

/** Splits a header section (latin1 text, CRLF line ends, possibly ending with its blank line). */
export function parseHeaders(head: string): { fields: HeaderField[]; rest: string } {
  const fields: HeaderField[] = [];
  let pos = 0;
  while (pos < head.length) {
    if (head.startsWith("\r\n", pos)) break; // the blank line ends the section
    let end = head.indexOf("\r\n", pos);
    if (end === -1) end = head.length - 2;
    // Continuation lines start with a space or a tab.
    while (end + 2 < head.length && (head[end + 2] === " " || head[end + 2] === "\t")) {
      const next = head.indexOf("\r\n", end + 2);
      end = next === -1 ? head.length - 2 : next;
    }
    const raw = head.slice(pos, end + 2);
    const colon = raw.indexOf(":");
    const name = colon === -1 ? raw.trim() : raw.slice(0, colon).trim();
    const value = colon === -1 ? "" : raw.slice(colon + 1).replace(/\r\n(?=[ \t])/g, "").trim();
    fields.push({ name, value, raw });
    pos = end + 2;
  }
  return { fields, rest: head.slice(pos) };
}

/** The header section without the fields `drop` selects; everything else unchanged. */
export function dropHeaders(head: string, drop: (name: string, value: string) => boolean): string {
  const { fields, rest } = parseHeaders(head);
  return fields.filter((f) => !drop(f.name, f.value)).map((f) => f.raw).join("") + rest;
}
