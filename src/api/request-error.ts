// A request the send API refuses: HTTP status, a stable code and a message for the caller.

export class RequestError extends Error {
  constructor(readonly status: 400 | 403 | 413, readonly code: string, message: string) {
    super(message);
  }
}
