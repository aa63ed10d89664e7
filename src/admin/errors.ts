// The one error type of the admin API and its JSON shape: {"error": {"code", "message"}}.
// Anything else thrown becomes a 500 with a generic message (details go to the log).

export class ApiError extends Error {
  constructor(readonly status: 400 | 401 | 404 | 409 | 429 | 500 | 503, readonly code: string, message: string) {
    super(message);
  }
}

export const errorBody = (code: string, message: string) => ({ error: { code, message } });
