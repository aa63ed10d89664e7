// Sends one message over SMTP or LMTP with nodemailer's SMTPConnection and reports a result
// per recipient. Connections are kept per route and reused for the next message.

import type { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { Route } from "../config/types.ts";
import { classify, type RecipientResult } from "./result.ts";

export interface ClientOptions {
  readonly heloName: string;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
}

export interface Envelope {
  readonly from: string;
  readonly to: readonly string[];
  readonly size: number;
}

interface SmtpError extends Error {
  responseCode?: number;
  response?: string;
  code?: string;
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

/** One open session to a next hop. */
export class HopConnection {
  private conn: SMTPConnection;
  private closed = false;
  lastUsed = Date.now();

  private constructor(conn: SMTPConnection) {
    this.conn = conn;
    conn.once("end", () => (this.closed = true));
    conn.once("error", () => (this.closed = true));
  }

  static open(route: Route, opts: ClientOptions): Promise<HopConnection> {
    const conn = new SMTPConnection({
      host: route.host,
      port: route.port,
      lmtp: route.protocol === "lmtp",
      name: opts.heloName,
      secure: false,
      // Opportunistic STARTTLS towards a configured next hop, like Postfix's "may": encrypt
      // when offered, without verifying a certificate that internal hosts rarely have.
      opportunisticTLS: true,
      tls: { rejectUnauthorized: false, minVersion: "TLSv1.2" },
      connectionTimeout: opts.connectTimeoutMs,
      greetingTimeout: opts.connectTimeoutMs,
      socketTimeout: opts.timeoutMs,
    } as SMTPConnection.Options);
    return new Promise((resolve, reject) => {
      conn.once("error", reject);
      conn.connect(() => {
        conn.off("error", reject);
        resolve(new HopConnection(conn));
      });
    });
  }

  get usable(): boolean {
    return !this.closed;
  }

  /** Sends and returns one result per envelope recipient, in order. Never throws. */
  async send(envelope: Envelope, body: Uint8Array | Readable): Promise<RecipientResult[]> {
    this.lastUsed = Date.now();
    try {
      const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) =>
        this.conn.send(
          { from: envelope.from, to: [...envelope.to], size: envelope.size } as SMTPConnection.Envelope,
          body instanceof Uint8Array ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : body,
          (err, info) => (err ? reject(err) : resolve(info)),
        ),
      );
      const rejected = byRecipient((info as { rejectedErrors?: SmtpError[] }).rejectedErrors);
      return envelope.to.map((rcpt) => rejected.get(rcpt) ?? { kind: "ok" as const, response: info.response });
    } catch (err) {
      const e = err as SmtpError;
      const rejected = byRecipient(e.rejectedErrors);
      const fallback = classify(e.responseCode, e.response ?? e.message);
      if (e.responseCode === undefined) this.close();
      else await this.reset();
      return envelope.to.map((rcpt) => rejected.get(rcpt) ?? fallback);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.quit();
    } catch {
      this.conn.close();
    }
  }

  /** After a refused transaction the session may still be mid-envelope; RSET or drop it. */
  private reset(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.conn.reset((err) => (err ? (this.close(), resolve()) : resolve())));
  }
}

function byRecipient(errors: SmtpError[] | undefined): Map<string, RecipientResult> {
  const out = new Map<string, RecipientResult>();
  for (const e of errors ?? []) if (e.recipient) out.set(e.recipient, classify(e.responseCode, e.response ?? e.message));
  return out;
}
