// The smtp-server internals our subclasses override or call (connection-adapter.ts,
// command-stream.ts, listener.ts). They are not the library's public surface, so start-up and
// the tests check that each one exists: an upgrade that renames one fails loudly, naming it,
// instead of silently changing behaviour. The version is pinned in package.json.

import { SMTPServer } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";

export function assertLibraryCompatible(): void {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  for (const method of ["_setListeners", "_createParser", "_onCloseEvent", "_onCommand", "_isDisabled", "_sendGreeting", "_resetSession", "_onTimeout", "_armTimeout", "connectionReady", "send", "init", "close", "handler_EHLO", "handler_MAIL", "handler_RCPT", "handler_DATA"]) {
    if (typeof proto[method] !== "function") {
      throw new Error(`smtp-server is incompatible: SMTPConnection.${method} is missing; pin the version in package.json`);
    }
  }
  const stream = SMTPStream.prototype as unknown as Record<string, unknown>;
  for (const method of ["_write", "_endDataMode", "_flushData", "_commandTooLong", "startDataMode"]) {
    if (typeof stream[method] !== "function") throw new Error(`smtp-server is incompatible: SMTPStream.${method} is missing; pin the version in package.json`);
  }
  // The listener refuses implicit-TLS connections before the handshake while it has no certificate,
  // and reads PROXY headers itself (v2 too) from trusted load balancers.
  for (const method of ["_acceptSocket", "_handleProxy", "_expectsProxyHeader"]) {
    if (typeof (SMTPServer.prototype as unknown as Record<string, unknown>)[method] !== "function") {
      throw new Error(`smtp-server is incompatible: SMTPServer.${method} is missing; pin the version in package.json`);
    }
  }
}
