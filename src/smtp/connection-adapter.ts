// The parts of smtp-server we adapt, kept in one file because they reach into the library's
// per-connection object (SMTPConnection) rather than its option surface:
//   - the greeting delay: the library holds every greeting for a hard-coded 100 ms. We need
//     none for trusted clients and a configurable pregreet wait for the rest, so init() is
//     replaced with the same steps and our delay.
//   - enhanced status codes: the library derives one from the reply code alone (550 -> 5.1.1).
//     Our replies carry their own ("554 5.7.1 Relaying denied"), so a reply text that
//     already starts with one is sent without the library's.
//   - command timeout: a started command line must be finished within the limit, so a client
//     cannot hold a session by dripping one byte at a time under the idle timeout.
// assertLibraryCompatible() runs at start-up and in the tests, so a library upgrade that
// renames these internals fails loudly instead of silently changing behaviour.

import type { Socket } from "node:net";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;

interface Parser {
  _dataMode?: boolean;
  _write(chunk: Buffer, encoding: BufferEncoding, next: (err?: Error | null) => void): void;
}

interface ConnectionInternals {
  _setListeners(callback: () => void): void;
  _createParser(): Parser;
  _parser: Parser | null;
  _socket: Socket;
  name: string;
}

export function assertLibraryCompatible(): void {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  for (const method of ["_setListeners", "_createParser", "connectionReady", "send", "init", "close"]) {
    if (typeof proto[method] !== "function") {
      throw new Error(`smtp-server is incompatible: SMTPConnection.${method} is missing; pin the version in package.json`);
    }
  }
}

export interface AdaptOptions {
  readonly greetingDelayMs: number;
  readonly commandTimeoutMs: number;
  readonly onCommandTimeout: () => void;
}

export function adaptConnection(conn: SMTPConnection, opts: AdaptOptions): void {
  const internals = conn as unknown as ConnectionInternals;
  const send = conn.send.bind(conn);
  conn.send = (code, data, context) => send(code, data, typeof data === "string" && ENHANCED.test(data) ? false : context);

  conn.init = () => {
    internals._setListeners(() => {
      if (opts.greetingDelayMs <= 0) return conn.connectionReady();
      setTimeout(() => conn.connectionReady(), opts.greetingDelayMs).unref();
    });
  };

  // Watch what the parser is fed rather than the socket: after STARTTLS the library swaps
  // in a new socket and parser, and only the parser sees cleartext.
  let timer: ReturnType<typeof setTimeout> | null = null;
  const stop = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const watch = (parser: Parser) => {
    const write = parser._write.bind(parser);
    parser._write = (chunk, encoding, next) => {
      if (parser._dataMode || chunk[chunk.length - 1] === 0x0a) stop();
      else if (!timer) {
        timer = setTimeout(() => {
          timer = null;
          send(421, `4.4.2 ${internals.name} Error: command timeout exceeded`, false);
          opts.onCommandTimeout();
        }, opts.commandTimeoutMs);
        timer.unref();
      }
      return write(chunk, encoding, next);
    };
    return parser;
  };
  const createParser = internals._createParser.bind(conn);
  internals._createParser = () => watch(createParser());
  if (internals._parser) watch(internals._parser);
  internals._socket.once("close", stop);
}
