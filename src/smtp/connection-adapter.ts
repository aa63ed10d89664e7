// RelayConnection: smtp-server's per-connection object with the few behaviours we change.
// They reach into the library's internals rather than its option surface, so they live in
// this one file, as prototype methods (no per-connection closures: an idle connection must
// stay cheap):
//   - greeting delay: the library holds every greeting for a hard-coded 100 ms. We need none
//     for trusted clients and a configurable pregreet wait for the rest, so init() does the
//     same steps with our delay.
//   - enhanced status codes: the library derives one from the reply code alone (550 -> 5.1.1).
//     Our replies carry their own ("554 5.7.1 Relaying denied"), so a reply text that already
//     starts with one is sent without the library's.
//   - command timeout: a started command line must be finished within the limit, so a client
//     cannot hold a session by dripping one byte at a time under the idle timeout. The parser
//     is watched rather than the socket: after STARTTLS only the new parser sees cleartext.
//   - STARTTLS without a certificate: the library would complete the handshake with its
//     built-in certificate (expired, CN=localhost, its key public in the npm package), even
//     where STARTTLS is not advertised; the listener's refusal is sent instead.
//   - connection slots: the listener's per-IP count is released when the session ends (QUIT
//     or socket close, whichever comes first).
// assertLibraryCompatible() runs at start-up and in the tests, so a library upgrade that
// renames these internals fails loudly instead of silently changing behaviour.

import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { SMTPServer } from "smtp-server";

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
const LF = 0x0a;

type WriteFn = (chunk: Buffer, encoding: BufferEncoding, next: (err?: Error | null) => void) => void;
interface Parser {
  _dataMode?: boolean;
  _write: WriteFn;
}

/** What a RelayConnection needs from the listener that made it. */
export interface ConnectionOwner {
  /** The session is over (QUIT, refusal or socket close): called once. */
  connectionEnded(conn: RelayConnection): void;
  commandTimedOut(conn: RelayConnection): void;
  /** The client sent a command before the greeting. */
  earlyTalker(conn: RelayConnection): void;
  /** A PROXY header from a peer not in smtp.proxy_protocol.trusted. */
  proxyRefused?(conn: RelayConnection): void;
  /** The client waited for a delayed greeting without talking: it passed the pregreet test. */
  pregreetPassed(conn: RelayConnection): void;
  /** The reply to STARTTLS while the listener has no certificate of ours; null when it has one. */
  readonly starttlsRefused: StarttlsRefusal | null;
}

export interface StarttlsRefusal {
  readonly code: number;
  /** With its enhanced status code, e.g. "4.7.0 TLS not available yet, try again later". */
  readonly text: string;
}

export function assertLibraryCompatible(): void {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  for (const method of ["_setListeners", "_createParser", "_onCloseEvent", "_onCommand", "_isDisabled", "connectionReady", "send", "init", "close"]) {
    if (typeof proto[method] !== "function") {
      throw new Error(`smtp-server is incompatible: SMTPConnection.${method} is missing; pin the version in package.json`);
    }
  }
  // The listener refuses implicit-TLS connections before the handshake while it has no certificate,
  // and reads PROXY headers itself (v2 too) from trusted load balancers.
  for (const method of ["_acceptSocket", "_handleProxy", "_expectsProxyHeader"]) {
    if (typeof (SMTPServer.prototype as unknown as Record<string, unknown>)[method] !== "function") {
      throw new Error(`smtp-server is incompatible: SMTPServer.${method} is missing; pin the version in package.json`);
    }
  }
}

export class RelayConnection extends SMTPConnection {
  greetingDelayMs = 0;
  commandTimeoutMs = 30_000;
  owner: ConnectionOwner | null = null;
  /** Submission on 587: AUTH is neither offered nor accepted before STARTTLS (RFC 3207, RFC 4954 4). */
  authRequiresTls = false;
  private ended = false;
  private commandTimer: ReturnType<typeof setTimeout> | null = null;

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    // smtp-server answers AUTH before STARTTLS with the non-standard 538; RFC 3207 says 530.
    if (code === 538) code = 530;
    super.send(code, data, typeof data === "string" && ENHANCED.test(data) ? false : context);
  }

  override init(): void {
    this._setListeners(() => {
      if (this.greetingDelayMs <= 0) return this.connectionReady();
      setTimeout(() => {
        if (this.ended) return;
        this.owner?.pregreetPassed(this);
        this.connectionReady();
      }, this.greetingDelayMs).unref();
    });
  }

  override close(): void {
    this.end();
    super.close();
  }

  // Postscreen's pregreet test: a client talking before the greeting is a bot that does not
  // wait for the server, so it gets a permanent refusal rather than the library's 421.
  override _onCommand(command: Buffer, callback?: () => void): void {
    // A PROXY header from a peer that is not a trusted load balancer would name any address it likes.
    if (command.length > 6 && command.toString("latin1", 0, 6).toUpperCase() === "PROXY ") {
      this.owner?.proxyRefused?.(this);
      super.send(554, "5.7.0 PROXY protocol not accepted from this address", false);
      this.close();
      callback?.();
      return;
    }
    const internals = this as unknown as { _ready: boolean; _upgrading: boolean; _server: { _closeTimeout: unknown } };
    if (!internals._ready && !internals._upgrading && !internals._server._closeTimeout) {
      this.owner?.earlyTalker(this);
      super.send(554, `5.5.1 ${this.name} Error: you talked before the greeting; goodbye`, false);
      this.close();
      callback?.();
      return;
    }
    const refusal = !this.secure && /^STARTTLS\b/i.test(command.toString("latin1")) ? this.owner?.starttlsRefused : null;
    if (refusal) {
      super.send(refusal.code, refusal.text, false);
      callback?.();
      return;
    }
    if (this.authRequiresTls && !this.secure && /^AUTH\b/i.test(command.toString("latin1"))) {
      super.send(530, "5.7.0 Must issue a STARTTLS command first", false);
      callback?.();
      return;
    }
    super._onCommand(command, callback);
  }

  // Hides AUTH from EHLO and from the library's "authentication required" gate until TLS is up.
  override _isDisabled(command: string): boolean {
    if (this.authRequiresTls && !this.secure && command === "AUTH") return true;
    return super._isDisabled(command);
  }

  override _onCloseEvent(hadError?: boolean): void {
    this.end();
    this.stopCommandTimer();
    super._onCloseEvent(hadError);
  }

  // Runs inside the library's constructor too (before our fields exist): touch none here.
  override _createParser(): ReturnType<SMTPConnection["_createParser"]> {
    const parser = super._createParser();
    const p = parser as unknown as Parser;
    const write = p._write;
    p._write = (chunk, encoding, next) => {
      this.watchCommand(p, chunk);
      write.call(p, chunk, encoding, next);
    };
    return parser;
  }

  private watchCommand(parser: Parser, chunk: Buffer): void {
    if (parser._dataMode || chunk[chunk.length - 1] === LF) return this.stopCommandTimer();
    if (this.commandTimer) return;
    this.commandTimer = setTimeout(() => this.commandTimeout(), this.commandTimeoutMs);
    this.commandTimer.unref();
  }

  private commandTimeout(): void {
    this.commandTimer = null;
    super.send(421, `4.4.2 ${this.name} Error: command timeout exceeded`, false);
    this.owner?.commandTimedOut(this);
  }

  private stopCommandTimer(): void {
    if (this.commandTimer) clearTimeout(this.commandTimer);
    this.commandTimer = null;
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.owner?.connectionEnded(this);
  }
}
