// A plaintext SMTP socket feeding its connection's parser. smtp-server does it with
// socket.pipe(parser) and two arrow functions for "close" and "error": pipe() alone makes some
// ten closures per connection, ~1.4 KiB of an idle connection's ~13. These listeners are
// shared (`this` is the socket, which carries its connection) and do what the pipe did: write
// each chunk, pause the socket while the parser is full and resume it when it drains, end the
// parser when the client ends. They also go the way the pipe went: the library's close() and
// the socket's close mark the parser closed, which they respect, and its upgrade() (STARTTLS,
// implicit TLS) removes every listener of the plaintext socket and pipes the TLS socket itself.

import type { Socket } from "node:net";
import type { SMTPStream } from "smtp-server/lib/smtp-stream.js";

/** What the listeners need of the connection (smtp-server's SMTPConnection internals). */
export interface FedConnection {
  readonly _parser: SMTPStream | false;
  _onCloseEvent(hadError?: boolean): void;
  _onError(err: Error): void;
  _onTimeout(): void;
}

const CONNECTION = Symbol("connection");
const WATCHED = Symbol("idle timeout watched");
type OwnedSocket = Socket & { [CONNECTION]?: FedConnection; [WATCHED]?: true };

export function feedParser(socket: Socket, conn: FedConnection): void {
  (socket as OwnedSocket)[CONNECTION] = conn;
  socket.on("close", onClose);
  socket.on("error", onError);
  socket.on("data", onData);
  socket.on("end", onEnd);
}

/**
 * The idle timeout, (re)armed: the library passes socket.setTimeout a new arrow function each
 * time (a closure and a once() wrapper per connection); one shared "timeout" listener does.
 * Also for the TLS socket of a STARTTLS session, which gets its connection here.
 */
export function armIdleTimeout(socket: Socket, conn: FedConnection, ms: number): void {
  const owned = socket as OwnedSocket;
  owned[CONNECTION] = conn;
  if (!owned[WATCHED]) {
    owned[WATCHED] = true;
    socket.on("timeout", onTimeout);
  }
  socket.setTimeout(ms);
}

function onTimeout(this: OwnedSocket): void {
  this[CONNECTION]?._onTimeout();
}

/** The parser's "drain" listener (`this` is the parser): its connection's socket reads again. */
export function resumeOnDrain(this: { readonly owner: object }): void {
  const socket = (this.owner as { _socket: Socket })._socket;
  if (socket.isPaused()) socket.resume();
}

function onData(this: OwnedSocket, chunk: Buffer): void {
  const parser = this[CONNECTION]?._parser;
  if (!parser || parser.isClosed) return;
  if (!parser.write(chunk)) this.pause();
}

function onEnd(this: OwnedSocket): void {
  const parser = this[CONNECTION]?._parser;
  if (parser && !parser.isClosed && !parser.writableEnded) parser.end();
}

function onClose(this: OwnedSocket, hadError: boolean): void {
  this[CONNECTION]?._onCloseEvent(hadError);
}

function onError(this: OwnedSocket, err: Error): void {
  this[CONNECTION]?._onError(err);
}
