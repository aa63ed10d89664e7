// The one error type of the admin API and its JSON shape: {"error": {"code", "message"}}.
// Anything else thrown becomes a 500 with a generic message (details go to the log).

export class ApiError extends Error {
  constructor(readonly status: 400 | 401 | 404 | 409 | 429 | 500 | 503, readonly code: string, message: string) {
    super(message);
  }
}

/** The request's JSON object body, or a 400 showing an example of what to send. */
export async function jsonObject(c: { req: { json(): Promise<unknown> } }, example: string): Promise<Record<string, unknown>> {
  try {
    const b = await c.req.json();
    if (b && typeof b === "object" && !Array.isArray(b)) return b as Record<string, unknown>;
  } catch {
    // not JSON at all: the same answer
  }
  throw new ApiError(400, "bad_body", `send a JSON object such as ${example}`);
}

export const errorBody = (code: string, message: string) => ({ error: { code, message } });
