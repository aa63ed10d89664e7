// RelayConnection: smtp-server's per-connection object with the few behaviours we change.
// They reach into the library's internals rather than its option surface, so they live in
// this one file, as prototype methods (no per-connection closures: an idle connection must
// stay cheap):
//   - greeting delay: the library holds every greeting for a hard-coded 100 ms. We need none
//     for trusted clients and a configurable pregreet wait for the rest, so init() does the
//     same steps with our delay. Input that arrives before the greeting is always refused.
//   - enhanced status codes: the library derives one from the reply code alone (550 -> 5.1.1).
//     Our replies carry their own ("554 5.7.1 Relaying denied"), so a reply text that already
//     starts with one is sent without the library's.
//   - the parser (command-stream.ts): command lines split by us, so pipelining violations are
//     seen (RFC 2920 3.1), and BDAT chunks (RFC 3030, bdat.ts) read by byte count.
//   - deadlines (input-deadline.ts): a started command line, and message content, must arrive
//     in time; the listener's limits (shorter under stress) decide how long.
//   - strict MAIL/RCPT arguments (envelope-params.ts) before the library parses them.
//   - an error limit: too many 4xx/5xx replies without a message accepted close the session.
//   - STARTTLS without a certificate: the library would complete the handshake with its
//     built-in certificate (expired, CN=localhost, its key public in the npm package), even
//     where STARTTLS is not advertised; the listener's refusal is sent instead.
//   - connection slots: the listener's per-IP count is released when the session ends (QUIT
//     or socket close, whichever comes first).
//   - the socket feeds the parser through shared functions rather than the library's pipe()
//     and two arrow functions: a dozen closures (~1.4 KiB) less per plaintext connection.
// assertLibraryCompatible() (library-compat.ts) runs at start-up and in the tests, so a library
// upgrade that renames these internals fails loudly instead of silently changing behaviour.

import { SMTPConnection, socketTimeout } from "smtp-server/lib/smtp-connection.js";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";
import { BdatTransfer, parseBdat, type Outcome } from "./bdat.ts";
import { CommandStream, type StreamOwner } from "./command-stream.ts";
import { checkMail, checkRcpt } from "./envelope-params.ts";
import type { ClockLimits, Overdue } from "./input-clock.ts";
import { InputDeadline, type DeadlineOwner } from "./input-deadline.ts";
import { armIdleTimeout, feedParser, resumeOnDrain } from "./socket-feed.ts";

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;


/** RFC 2920 3.1 (and RFC 3207, RFC 4954 for STARTTLS and AUTH): these may only end a pipelined group. */
const GROUP_END = new Set(["EHLO", "HELO", "DATA", "VRFY", "EXPN", "TURN", "NOOP", "QUIT", "STARTTLS", "AUTH"]);
/** After a refused DATA (or a BDAT that could not be read), anything else is content sent without waiting. */
const AFTER_FAILED_DATA = new Set(["RSET", "QUIT", "NOOP", "HELO", "EHLO"]);

/** The listener's limits for its sessions; they get shorter while it is under stress. */
export interface SessionLimits extends ClockLimits {
  /** 4xx/5xx replies allowed without a message accepted (Postfix's smtpd_hard_error_limit). */
  readonly errorLimit: number;
}

const DEFAULT_LIMITS: SessionLimits = { commandTimeoutMs: 30_000, dataTimeoutMs: 600_000, minDataRate: 500, errorLimit: 20 };

/** What a RelayConnection needs from the listener that made it. */
export interface ConnectionOwner {
  readonly limits: SessionLimits;
  /** The session is over (QUIT, refusal or socket close): called once. */
  connectionEnded(conn: RelayConnection): void;
  commandTimedOut(conn: RelayConnection, kind?: Overdue): void;
  /** The client sent a command before the greeting. */
  earlyTalker(conn: RelayConnection): void;
  /** A PROXY header from a peer not in smtp.proxy_protocol.trusted. */
  proxyRefused?(conn: RelayConnection): void;
  /** The client waited for a delayed greeting without talking: it passed the pregreet test. */
  pregreetPassed(conn: RelayConnection): void;
  /** More input after a command that must end a pipelined group, or content after a refused DATA. */
  syncViolation(conn: RelayConnection, after: string, input: string): void;
  tooManyErrors(conn: RelayConnection): void;
  /** The reply to STARTTLS while the listener has no certificate of ours; null when it has one. */
  readonly starttlsRefused: StarttlsRefusal | null;
}

export interface StarttlsRefusal {
  readonly code: number;
  /** With its enhanced status code, e.g. "4.7.0 TLS not available yet, try again later". */
  readonly text: string;
}

/** A table that stays empty, shared by every connection; writing to it is a bug, so it throws. */
class EmptyTable<K, V> extends Map<K, V> {
  override set(): this {
    throw new Error("smtp-server wrote to a table shared by every connection");
  }
}
/** XCLIENT/XFORWARD fields: none, as the listeners never enable those commands. */
const NO_PROXY_FIELDS = new EmptyTable<string, string | number | false>();
/** The recipients of a transaction that has none yet (handler_RCPT makes the real one). */
const NO_RECIPIENTS = new EmptyTable<string, number>();

export class RelayConnection extends SMTPConnection implements StreamOwner, DeadlineOwner {
  greetingDelayMs = 0;
  /** Greeted without the pregreet wait, but one timer turn later: input sent with the connection is still seen. */
  greetingHold = false;
  owner: ConnectionOwner | null = null;
  /** Submission on 587: AUTH is neither offered nor accepted before STARTTLS (RFC 3207, RFC 4954 4). */
  authRequiresTls = false;
  private ended = false;
  private errors = 0;
  private failedData = false;
  private inEhlo = false;
  private bdat: BdatTransfer | null = null;
  /** A BDAT chunk refused before it is read (no MAIL or RCPT): its octets are dropped, then this goes out. */
  private chunkRefusal: string | null = null;
  /** The parser's continuation, held while the message of a BDAT LAST is decided. */
  private afterBdat: (() => void) | null = null;
  private lastChunk = 0;
  /** Made once the client owes input (input-deadline.ts); an idle session has none. */
  private deadline: InputDeadline | null = null;

  constructor(...args: ConstructorParameters<typeof SMTPConnection>) {
    super(...args);
    // An idle connection keeps only what it uses: the library gives each its own three Maps.
    const options = this._server.options;
    if (!options.useXClient && !options.useXForward) this._xClient = this._xForward = NO_PROXY_FIELDS;
    this._rcptIndex = NO_RECIPIENTS;
  }

  get limits(): SessionLimits {
    return this.owner?.limits ?? DEFAULT_LIMITS;
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    // smtp-server answers AUTH before STARTTLS with the non-standard 538; RFC 3207 says 530.
    if (code === 538) code = 530;
    // CHUNKING (RFC 3030) is ours, not the library's: added to its EHLO keywords.
    if (this.inEhlo && code === 250 && Array.isArray(data)) data = [...data, "CHUNKING"];
    super.send(code, data, typeof data === "string" && ENHANCED.test(data) ? false : context);
    this.countError(code, context);
  }

  // The library's version pipes the socket into the parser (socket-feed.ts says why not).
  override _setListeners(callback: () => void): void {
    feedParser(this._socket, this);
    this._armTimeout();
    if (!this.needsUpgrade) return callback();
    this.upgrade(() => false, callback);
  }

  override init(): void {
    this._setListeners(() => {
      if (this.greetingDelayMs <= 0 && !this.greetingHold) return this.connectionReady();
      setTimeout(greetLater, Math.max(0, this.greetingDelayMs), this).unref();
    });
  }

  /** The greeting is due: unless the client has already talked (a partial line counts too). */
  greet(): void {
    if (this.ended) return;
    if (this.heardEarly()) return;
    if (this.greetingDelayMs > 0) this.owner?.pregreetPassed(this);
    this.connectionReady();
  }

  // Also the last look before the banner goes out (connect checks may have run meanwhile).
  override _sendGreeting(): void {
    if (!this.heardEarly()) super._sendGreeting();
  }

  override close(): void {
    this.end();
    super.close();
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    // A PROXY header from a peer that is not a trusted load balancer would name any address it likes.
    if (command.length > 6 && command.toString("latin1", 0, 6).toUpperCase() === "PROXY ") {
      this.owner?.proxyRefused?.(this);
      super.send(554, "5.7.0 PROXY protocol not accepted from this address", false);
      this.close();
      return callback?.();
    }
    // Postscreen's pregreet test: a client talking before the greeting is a bot that does not
    // wait for the server, so it gets a permanent refusal rather than the library's 421.
    if (!this._ready && !this._upgrading && !this._server._closeTimeout) {
      this.refuseEarlyTalker();
      return callback?.();
    }
    if (this._ready && !this._upgrading && !this._nextHandler && this.outOfSync(command, callback)) return;
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
    this.deadline?.stop();
    this.bdat?.abort();
    super._onCloseEvent(hadError);
  }

  // Runs inside the library's constructor too (before our fields exist): touch none here.
  override _createParser(): SMTPStream {
    const parser = new CommandStream(this, { maxCommandLength: this._server.options.maxCommandLength });
    parser.on("error", onParserError);
    parser.on("drain", resumeOnDrain);
    return parser;
  }

  // EHLO, HELO, RSET, STARTTLS and the end of a message: the transaction is over.
  override _resetSession(): void {
    super._resetSession();
    this._rcptIndex = NO_RECIPIENTS;
    this.failedData = false;
    if (this.bdat) {
      this.bdat.abort();
      this.bdat = null;
      this.contentEnded();
    }
  }

  override _armTimeout(socket = this._socket): void {
    armIdleTimeout(socket, this, socketTimeout(this._server.options));
  }

  // While the message of a BDAT LAST is being decided the client waits for us, as after DATA.
  override _onTimeout(): void {
    if (this.afterBdat && !this._closing) return this._armTimeout();
    super._onTimeout();
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.inEhlo = true;
    try {
      super.handler_EHLO(command, callback);
    } finally {
      this.inEhlo = false;
    }
  }

  override handler_MAIL(command: Buffer, callback: () => void): void {
    const options = this._server.options;
    const refusal = checkMail(command, { maxSize: Number(options.size) || Infinity, auth: this._isSupported("AUTH"), dsn: !options.hideDSN });
    if (refusal) return this.reply(refusal.code, `${refusal.status} ${refusal.text}`, callback);
    super.handler_MAIL(command, callback);
  }

  override handler_RCPT(command: Buffer, callback: () => void): void {
    if (this.bdat) return this.reply(503, "5.5.1 Error: RCPT after BDAT", callback);
    if (this._rcptIndex === NO_RECIPIENTS) this._rcptIndex = new Map();
    const envelope = this.session.envelope;
    const refusal = envelope.mailFrom ? checkRcpt(command, !!envelope.smtpUtf8, !this._server.options.hideDSN) : null;
    if (refusal) return this.reply(refusal.code, `${refusal.status} ${refusal.text}`, callback);
    super.handler_RCPT(command, callback);
  }

  override handler_DATA(command: Buffer, callback: () => void): void {
    const envelope = this.session.envelope;
    const refusal = this.bdat
      ? "503 5.5.1 Error: DATA after BDAT"
      : !envelope.mailFrom
        ? "503 5.5.1 Error: need MAIL command"
        : !envelope.rcptTo.length
          ? "554 5.5.1 Error: no valid recipients"
          : null;
    if (refusal) {
      // Whatever the client sent behind this DATA without waiting is content, never commands.
      this.failedData = true;
      return this.reply(Number(refusal.slice(0, 3)), refusal.slice(4), callback);
    }
    this.startContent();
    super.handler_DATA(command, callback);
  }

  /** BDAT chunk-size [LAST] (RFC 3030): the chunk's octets follow the command line. */
  handler_BDAT(command: Buffer, callback: () => void): void {
    const parser = this._parser as CommandStream | false;
    if (!parser) return callback();
    const cmd = parseBdat(command.toString("latin1"));
    if (!cmd) {
      // The chunk's length is unknown, so what follows cannot be told apart from commands.
      this.failedData = true;
      return this.reply(501, "5.5.4 Syntax: BDAT count [LAST]", callback);
    }
    const envelope = this.session.envelope;
    this.chunkRefusal = !envelope.mailFrom ? "5.5.1 Error: need MAIL command" : !envelope.rcptTo.length ? "5.5.1 Error: need RCPT command" : null;
    if (this.chunkRefusal === null) {
      if (!this.bdat) this.startBdat();
      this.bdat!.announce(cmd);
    }
    this.lastChunk = cmd.size;
    parser.startChunk(cmd.size);
    callback();
  }

  chunkData(bytes: Buffer, next: () => void): void {
    if (this.chunkRefusal !== null || !this.bdat) return next();
    this.bdat.take(bytes, next);
  }

  chunkEnd(next: () => void): void {
    const t = this.bdat;
    if (this.chunkRefusal !== null || !t) {
      const refusal = this.chunkRefusal;
      this.chunkRefusal = null;
      if (refusal) this.send(503, refusal);
      return next();
    }
    if (!t.ending) {
      this.send(250, `2.0.0 Ok: ${this.lastChunk} octets received`);
      return next();
    }
    t.end();
    this.contentEnded();
    this.afterBdat = next;
    if (t.outcome) this.finishBdat(t);
  }

  inputArrived(bytes: number, lineOpen: boolean): void {
    // Whole command lines owe nothing: an idle session carries no deadline until it is needed.
    if (!this.deadline && !lineOpen) return;
    (this.deadline ??= new InputDeadline(this)).input(bytes, lineOpen);
  }

  contentEnded(): void {
    this.deadline?.contentEnded();
  }

  overdue(kind: Overdue): void {
    if (this._closing) return;
    const what = kind === "command" ? "command timeout exceeded" : kind === "rate" ? "data timeout exceeded (content arrives too slowly)" : "data timeout exceeded";
    super.send(421, `4.4.2 ${this.name} Error: ${what}`, false);
    this.owner?.commandTimedOut(this, kind);
  }

  private startBdat(): void {
    const t = new BdatTransfer(Number(this._server.options.size) || Infinity);
    this.bdat = t;
    this.startContent();
    this._server.onData(t.stream, this.session, (err, message) => this.bdatOutcome(t, { err, message: message as string | undefined }));
  }

  private bdatOutcome(t: BdatTransfer, outcome: Outcome): void {
    if (t !== this.bdat) return; // abandoned (RSET, EHLO, closed)
    t.outcome = outcome;
    if (this.afterBdat) this.finishBdat(t);
  }

  /** Like the library's end of DATA: the reply, a fresh transaction, and the parser goes on. */
  private finishBdat(t: BdatTransfer): void {
    const next = this.afterBdat!;
    const { err, message } = t.outcome!;
    this.afterBdat = null;
    this.bdat = null;
    if (err) this.send(err.responseCode || 450, err.message);
    else this.send(250, typeof message === "string" ? message : "OK: message queued", "DATA_OK");
    this._transactionCounter++;
    this._unrecognizedCommands = 0;
    this._resetSession();
    next();
  }

  private startContent(): void {
    (this.deadline ??= new InputDeadline(this)).startContent();
  }

  /** RFC 2920 3.1 synchronisation; true when the session was closed for it. */
  private outOfSync(command: Buffer, callback?: () => void): boolean {
    const space = command.indexOf(0x20);
    const verb = command.subarray(0, space === -1 ? command.length : space).toString("latin1").toUpperCase();
    const parser = this._parser as CommandStream | false;
    if (GROUP_END.has(verb) && parser && parser.pendingInput() + this._socket.readableLength > 0) {
      this.protocolSyncError(verb, parser.peekPending(100), callback);
      return true;
    }
    if (this.failedData && !AFTER_FAILED_DATA.has(verb)) {
      this.protocolSyncError("refused DATA", command.subarray(0, 100), callback);
      return true;
    }
    return false;
  }

  // Postfix's smtpd_forbid_unauth_pipelining: the same reply, and the connection is closed, so
  // nothing the client pipelined runs.
  private protocolSyncError(after: string, input: Buffer, callback?: () => void): void {
    this.owner?.syncViolation(this, after, input.toString("latin1"));
    super.send(554, "5.5.0 Error: SMTP protocol synchronization", false);
    this.close();
    callback?.();
  }

  /** True (and the client refused) when it sent anything before the greeting. */
  private heardEarly(): boolean {
    const parser = this._parser as CommandStream | false;
    if (!parser || parser.pendingInput() === 0) return false;
    this.refuseEarlyTalker();
    return true;
  }

  private refuseEarlyTalker(): void {
    this.owner?.earlyTalker(this);
    super.send(554, `5.5.1 ${this.name} Error: you talked before the greeting; goodbye`, false);
    this.close();
  }

  private reply(code: number, text: string, callback: () => void): void {
    this.send(code, text);
    callback();
  }

  private countError(code: number, context?: string | false): void {
    if (context === "DATA_OK") this.errors = 0; // "errors without delivering mail"
    if (code < 400 || code === 421 || this._closing) return;
    if (++this.errors < this.limits.errorLimit) return;
    this.owner?.tooManyErrors(this);
    super.send(421, `4.7.0 ${this.name} Error: too many errors; closing connection`, false);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.owner?.connectionEnded(this);
  }
}

function greetLater(conn: RelayConnection): void {
  conn.greet();
}

// `this` is the parser; its connection answers (the library's handler, with our own words).
function onParserError(this: CommandStream, err: Error): void {
  const conn = this.owner as RelayConnection;
  conn.send(421, /too long/i.test(err.message) ? `4.4.2 ${conn.name} Error: Command line too long` : `4.3.0 ${conn.name} Error: local error in processing`);
}
