// Sends one message over SMTP or LMTP with nodemailer's SMTPConnection and reports a result
// per recipient. Connections are kept per route (or per destination domain) and reused for the
// next message. Opening one says how it failed (HopOpenError), so connect.ts can decide
// whether to try the next MX host, retry without TLS, or give up.

import type { Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { extensionsOf, paramHook, type EsmtpParams, type HopExtensions } from "./esmtp-params.ts";
import { classify, type RecipientResult } from "./result.ts";
import { demandsTls, startTlsOptions, type TlsPolicy } from "./tls-policy.ts";

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

/** One host to open a session with. */
export interface HopTarget {
  /** An address (MX delivery connects to the addresses it resolved) or a host name. */
  readonly host: string;
  readonly port: number;
  readonly lmtp: boolean;
  readonly tls: TlsPolicy;
  /** The MX host name: sent as SNI, and what the certificate must name under "verify". */
  readonly servername?: string;
  /** For logs and failure texts: "mx1.example.org[192.0.2.1]". */
  readonly label: string;
}

/** nodemailer options for one session with a next hop: plain connect, then STARTTLS as `target.tls` says. */
export function sessionOptions(target: Pick<HopTarget, "host" | "port" | "lmtp" | "tls" | "servername">, heloName: string, connectTimeoutMs: number, timeoutMs: number): SMTPConnection.Options {
  return {
    host: target.host,
    port: target.port,
    lmtp: target.lmtp,
    name: heloName,
    secure: false,
    ...startTlsOptions(target.tls, target.servername),
    connectionTimeout: connectTimeoutMs,
    greetingTimeout: connectTimeoutMs,
    socketTimeout: timeoutMs,
  } as SMTPConnection.Options;
}

/**
 * Why a session could not be opened:
 *   connect        no TCP connection, a timeout, or the server hung up
 *   reply          the greeting or EHLO/HELO was answered with `responseCode`
 *   tls-handshake  STARTTLS was accepted but the handshake failed (or the certificate did not verify)
 *   tls-missing    the policy demands TLS and the server did not offer STARTTLS or refused it
 */
export class HopOpenError extends Error {
  constructor(
    readonly stage: "connect" | "reply" | "tls-handshake" | "tls-missing",
    message: string,
    readonly responseCode?: number,
    /** The server's reply as it said it, when there was one. */
    readonly response?: string,
  ) {
    super(message);
  }
}

interface SmtpError extends Error {
  responseCode?: number;
  response?: string;
  code?: string;
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

/** What a session is talking to, for the "delivery attempt" log line. */
export interface Peer {
  /** "mx1.example.org[192.0.2.1]" for MX delivery, null for a configured route. */
  readonly mx: string | null;
  /** The negotiated TLS version ("TLSv1.3"), null in plain text. */
  readonly tls: string | null;
}

/** One open session to a next hop. */
export class HopConnection {
  private conn: SMTPConnection;
  private closed = false;
  lastUsed = Date.now();
  /** What the next hop offered (8BITMIME, SMTPUTF8, DSN). */
  readonly extensions: HopExtensions;
  private readonly params: ReturnType<typeof paramHook>;

  private constructor(conn: SMTPConnection, readonly peer: Peer) {
    this.conn = conn;
    this.extensions = extensionsOf(conn);
    this.params = paramHook(conn);
    conn.once("end", () => (this.closed = true));
    conn.once("error", () => (this.closed = true));
  }

  /** Connects, reads the greeting, says EHLO (or LHLO), negotiates TLS as the policy says. */
  static open(target: HopTarget, opts: ClientOptions, mx: boolean): Promise<HopConnection> {
    const conn = new SMTPConnection(sessionOptions(target, opts.heloName, opts.connectTimeoutMs, opts.timeoutMs));
    // An 'error' event without a listener would throw; errors after the ones we wait for below
    // (a reset during QUIT of a refused session) only mean the session is gone.
    conn.on("error", () => {});
    return new Promise((resolve, reject) => {
      const fail = (err: SmtpError) => {
        conn.off("error", fail);
        conn.close();
        reject(openError(err, conn, target));
      };
      conn.once("error", fail);
      conn.connect((err) => {
        if (err) return fail(err as SmtpError);
        conn.off("error", fail);
        if (demandsTls(target.tls) && !conn.secure) {
          conn.quit();
          return reject(new HopOpenError("tls-missing", `4.7.5 TLS required but not available: ${target.label} does not offer STARTTLS`));
        }
        const tls = conn.secure ? ((conn as unknown as { _socket: TLSSocket })._socket.getProtocol() ?? "TLS") : null;
        resolve(new HopConnection(conn, { mx: mx ? target.label : null, tls }));
      });
    });
  }

  get usable(): boolean {
    return !this.closed;
  }

  /** Sends and returns one result per envelope recipient, in order. Never throws. */
  async send(envelope: Envelope, body: Uint8Array | Readable, params: EsmtpParams | null = null): Promise<RecipientResult[]> {
    this.lastUsed = Date.now();
    this.params.set(params);
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
    } finally {
      this.params.set(null);
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

function openError(err: SmtpError, conn: SMTPConnection, target: HopTarget): HopOpenError {
  // nodemailer keeps `upgrading` set from STARTTLS's 220 until the handshake completes, and
  // reports a failed handshake (a certificate that does not verify included) as a socket error.
  if ((conn as unknown as { upgrading?: boolean }).upgrading) {
    const why = `${target.label}: TLS handshake failed: ${err.message}`;
    return new HopOpenError("tls-handshake", demandsTls(target.tls) ? `4.7.5 TLS required but not available: ${why}` : why);
  }
  // STARTTLS answered with an error while the policy demands TLS (opportunistic goes on in plain text).
  if (err.code === "ETLS") return new HopOpenError("tls-missing", `4.7.5 TLS required but not available: ${target.label} refused STARTTLS: ${err.response ?? err.message}`);
  if (err.responseCode) return new HopOpenError("reply", err.response ?? err.message, err.responseCode, err.response);
  return new HopOpenError("connect", `4.4.1 Connection to ${target.label} failed: ${err.message}`);
}

function byRecipient(errors: SmtpError[] | undefined): Map<string, RecipientResult> {
  const out = new Map<string, RecipientResult>();
  for (const e of errors ?? []) if (e.recipient) out.set(e.recipient, classify(e.responseCode, e.response ?? e.message));
  return out;
}
