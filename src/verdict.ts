// The outcome of every check in the message pipeline. A check reports what it found as data;
// the SMTP adapter turns a non-accept verdict into a reply in one place.

export type Verdict =
  | { readonly kind: "accept" }
  | { readonly kind: "defer" | "reject"; readonly code: number; readonly status: string; readonly text: string; readonly reason: string };

export const ACCEPT: Verdict = Object.freeze({ kind: "accept" });

/** A 4xx reply: the client should try again later. */
export function defer(code: number, status: string, text: string, reason: string): Verdict {
  return { kind: "defer", code, status, text, reason };
}

/** A 5xx reply: the client must not retry this transaction as is. */
export function reject(code: number, status: string, text: string, reason: string): Verdict {
  return { kind: "reject", code, status, text, reason };
}

/** The reply line without the code, e.g. "5.7.1 Relaying denied". */
export function replyText(v: Exclude<Verdict, { kind: "accept" }>): string {
  return `${v.status} ${v.text}`;
}
