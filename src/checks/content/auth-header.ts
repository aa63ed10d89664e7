// The header section sender authentication gets to see: bounded, and with only the fields its
// verdict depends on. mailauth parses a header section in time quadratic in its folded lines
// (64k folds: ~10 s on one thread) and verifies every signature it finds, each with its own body
// hash; so what it is given is cut down here first:
//   - at most maxDkim DKIM-Signature fields, the bottom-most ones (the oldest: a signer only
//     ever covers fields below its own, so every kept signature still sees what it signed);
//   - the ARC sets only when there are at most maxArcSets of them, otherwise none;
//   - From, and every instance of each field a kept signature lists in h= (DKIM selects them
//     bottom-up by name, RFC 6376 5.4.2, so keeping all instances of a name keeps the choice);
//   - within MAX_LINES physical lines and MAX_BYTES: From first, then the signatures, the ARC
//     sets, the signed fields. A signed field left out makes its signature fail, which is right
//     for a header nobody can check within the budget; a From that does not fit means the
//     message cannot be checked at all.
// The names of the keys to look up (selector._domainkey.domain) come out too, for the lookups
// to start together.

export interface AuthHeader {
  /** The header section for mailauth, CRLF line ends, ending with the empty line. */
  readonly head: string;
  /** DKIM-Signature fields left out (over max_dkim_signatures or the budget). */
  readonly dkimNotChecked: number;
  /** ARC sets left out, or 0. */
  readonly arcNotChecked: number;
  /** DNS names of the keys of the kept signatures and seals. */
  readonly keyNames: readonly string[];
}

const MAX_LINES = 1000;
const MAX_BYTES = 64 * 1024;
const ARC_NAMES = new Set(["arc-seal", "arc-message-signature", "arc-authentication-results"]);

interface Field {
  readonly name: string;
  /** The field with its CRLF. */
  readonly text: string;
  readonly lines: number;
}

/** Null when the From field(s) alone do not fit the budget: the message cannot be checked. */
export function authHeader(head: string, maxDkim: number, maxArcSets: number): AuthHeader | null {
  const fields = splitFields(head);
  const sigs = fields.flatMap((f, i) => (f.name === "dkim-signature" ? [i] : []));
  const arc = fields.flatMap((f, i) => (ARC_NAMES.has(f.name) ? [i] : []));
  const arcSets = fields.filter((f) => f.name === "arc-seal").length;

  const keep = new Set<number>();
  let lines = 0;
  let bytes = 0;
  const fits = (i: number) => lines + fields[i]!.lines <= MAX_LINES && bytes + fields[i]!.text.length <= MAX_BYTES;
  const take = (i: number) => {
    keep.add(i);
    lines += fields[i]!.lines;
    bytes += fields[i]!.text.length;
  };

  for (const [i, f] of fields.entries()) {
    if (f.name !== "from") continue;
    if (!fits(i)) return null;
    take(i);
  }
  const keptSigs = sigs.slice(-maxDkim).reverse().filter((i) => fits(i) && (take(i), true));
  let keptArc: number[] = [];
  if (arcSets > 0 && arcSets <= maxArcSets) {
    const need = arc.reduce((n, i) => ({ lines: n.lines + fields[i]!.lines, bytes: n.bytes + fields[i]!.text.length }), { lines: 0, bytes: 0 });
    if (lines + need.lines <= MAX_LINES && bytes + need.bytes <= MAX_BYTES) {
      arc.forEach(take);
      keptArc = arc;
    }
  }

  const signatures = [...keptSigs, ...keptArc.filter((i) => fields[i]!.name !== "arc-authentication-results")].map((i) => tags(fields[i]!.text));
  const signed = new Set(signatures.flatMap((t) => (t.get("h") ?? "").split(":").map((n) => n.trim().toLowerCase()).filter((n) => n && n !== "dkim-signature" && !ARC_NAMES.has(n))));
  for (let i = fields.length - 1; i >= 0; i--) if (signed.has(fields[i]!.name) && !keep.has(i) && fits(i)) take(i);

  const keyNames = [...new Set(signatures.flatMap((t) => (t.get("s") && t.get("d") ? [`${t.get("s")}._domainkey.${t.get("d")}`.toLowerCase()] : [])))];
  return {
    head: `${fields.flatMap((f, i) => (keep.has(i) ? [f.text] : [])).join("")}\r\n`,
    dkimNotChecked: sigs.length - keptSigs.length,
    arcNotChecked: keptArc.length ? 0 : arcSets,
    keyNames,
  };
}

/** The fields of a header section (CRLF line ends, the empty line last), with lower-case names. */
function splitFields(head: string): Field[] {
  const out: Field[] = [];
  const end = head.endsWith("\r\n\r\n") ? head.length - 2 : head.length;
  let start = 0;
  let lines = 0;
  // A field ends at a CRLF not followed by a blank (RFC 5322 2.2.3: that would be a fold).
  // Walked with the native indexOf: linear however the client folds.
  for (let at = head.indexOf("\r\n"); start < end; at = head.indexOf("\r\n", at + 2)) {
    const lineEnd = at < 0 || at >= end ? end : at + 2;
    lines++;
    const next = head.charCodeAt(lineEnd);
    if (lineEnd >= end || (next !== 0x20 && next !== 0x09)) {
      const text = head.slice(start, lineEnd);
      // As mailauth reads it: what comes before the colon, folds and outer blanks removed.
      const colon = text.indexOf(":");
      const name = (colon < 0 ? text : text.slice(0, colon)).replace(/\r\n/g, "").trim().toLowerCase();
      out.push({ name, text: text.endsWith("\r\n") ? text : `${text}\r\n`, lines });
      start = lineEnd;
      lines = 0;
    }
    if (at < 0) break;
  }
  return out;
}

/** The tags of a DKIM-Signature or ARC field (RFC 6376 3.2): names as written, values without blanks. */
function tags(field: string): Map<string, string> {
  const value = field.slice(field.indexOf(":") + 1);
  const out = new Map<string, string>();
  for (const part of value.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    out.set(part.slice(0, eq).trim(), part.slice(eq + 1).replace(/[ \t\r\n]+/g, ""));
  }
  return out;
}
