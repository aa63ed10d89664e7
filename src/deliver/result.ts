// What one delivery attempt said about each recipient, reduced from the SMTP client's
// callbacks to data: temporary vs permanent is decided here, in one place.

export type RecipientResult =
  | { readonly kind: "ok"; readonly response: string }
  | { readonly kind: "temporary" | "permanent"; readonly response: string };

/** Classifies a reply (or the lack of one: connection trouble is always temporary). */
export function classify(code: number | undefined, response: string): RecipientResult {
  if (code !== undefined && code >= 200 && code < 300) return { kind: "ok", response };
  if (code !== undefined && code >= 500 && code < 600) return { kind: "permanent", response };
  return { kind: "temporary", response };
}
