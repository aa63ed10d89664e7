// Who a raw message says it is from, read the way mail clients and parsers read it: field
// names matched however they are spaced or folded ("From : x", "From\r\n : x"), values
// unfolded, groups flattened, and encoded words decoded as well as taken literally (a parser
// that decodes "=?utf-8?Q?boss=40bank.example?=" finds an address there). The send API checks
// every address found against the key's domains, so no spelling slips a foreign From past it.

import libmime from "libmime";
import addressparser from "nodemailer/lib/addressparser";
import { RequestError } from "./request-error.ts";

/** Header fields that name the author or the sender, original or resent (RFC 5322 3.6.2, 3.6.6). */
const ORIGINATOR_FIELDS = ["from", "sender", "resent-from", "resent-sender"] as const;

type Parsed = ReturnType<typeof addressparser>;

function flatten(list: Parsed): string[] {
  return list.flatMap((a) => ("group" in a && a.group ? flatten(a.group as Parsed) : "address" in a && a.address ? [a.address.toLowerCase()] : []));
}

/** The addresses in one field's value, literally and with encoded words decoded; duplicates removed. */
function addressesIn(value: string): string[] {
  return [...new Set([...flatten(addressparser(value)), ...flatten(addressparser(libmime.decodeWords(value)))])];
}

export interface Originators {
  /** The one author. */
  readonly from: string;
  /** Every address in From, Sender, Resent-From and Resent-Sender. */
  readonly all: readonly string[];
}

/**
 * Reads the originator fields of a header section (CRLF line ends). Exactly one From: field
 * with one mailbox (RFC 5322 3.6: one From; several authors need a Sender, and mail with several
 * From addresses fails DMARC anyway), at most one Sender: with one mailbox.
 */
export function originators(head: string): Originators {
  const fields = libmime.decodeHeaders(head);
  const values = (name: string) => (Object.hasOwn(fields, name) ? fields[name]! : []);
  const from = values("from");
  if (from.length === 0) throw new RequestError(400, "bad_message", "the message has no From: header");
  if (from.length > 1) throw new RequestError(400, "bad_message", `the message has ${from.length} From: headers; exactly one is allowed`);
  const authors = addressesIn(from[0]!);
  if (authors.length !== 1) throw new RequestError(400, "bad_message", `the From: header must name exactly one address, found ${authors.length}`);
  const sender = values("sender");
  if (sender.length > 1 || (sender.length === 1 && addressesIn(sender[0]!).length !== 1)) throw new RequestError(400, "bad_message", "the Sender: header must appear at most once, with one address");
  const all = ORIGINATOR_FIELDS.flatMap((name) => values(name).flatMap(addressesIn));
  return { from: authors[0]!, all: [...new Set(all)] };
}
