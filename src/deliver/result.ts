// What one delivery attempt said about each recipient, reduced from the SMTP client's
// callbacks to data: temporary vs permanent is decided here, in one place.

export type RecipientResult =
  | { readonly kind: "ok"; readonly response: string }
  | { readonly kind: "temporary" | "permanent"; readonly response: string };

export type FailureResult = Extract<RecipientResult, { kind: "temporary" | "permanent" }>;

/** Classifies a reply (or the lack of one: connection trouble is always temporary). */
export function classify(code: number | undefined, response: string): RecipientResult {
  if (code !== undefined && code >= 200 && code < 300) return { kind: "ok", response };
  if (code !== undefined && code >= 500 && code < 600) return { kind: "permanent", response };
  return { kind: "temporary", response };
}

/**
 * No session could be opened, and why, for every recipient of the attempt: a null MX or an
 * unknown domain is permanent; DNS trouble, hosts down or a TLS policy not met are temporary.
 */
export class DeliveryFailure extends Error {
  constructor(readonly result: FailureResult) {
    super(result.response);
  }

  static temporary(response: string): DeliveryFailure {
    return new DeliveryFailure({ kind: "temporary", response });
  }

  static permanent(response: string): DeliveryFailure {
    return new DeliveryFailure({ kind: "permanent", response });
  }
}
