// What a next hop offered in its EHLO (LHLO) reply, and the MAIL and RCPT parameters we add
// for the extensions it offers: BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID and
// per recipient NOTIFY/ORCPT (RFC 3461).
//
// nodemailer's SMTPConnection takes BODY=, SIZE and one DSN setting for the whole envelope,
// but RFC 3461 NOTIFY and ORCPT are per recipient, and SMTPUTF8 is needed for UTF-8 header
// fields as much as for addresses. So the parameters are appended to the command lines as
// the connection writes them: one hook on its command writer, in this file only. It reads
// nodemailer internals (_supportedExtensions, _sendCommand); nodemailer's version is pinned
// and tests/e2e/next-hop-capabilities.test.ts checks the parameters a real server receives.

import type SMTPConnection from "nodemailer/lib/smtp-connection";

export interface HopExtensions {
  readonly eightBitMime: boolean;
  readonly smtputf8: boolean;
  readonly dsn: boolean;
}

export interface EsmtpParams {
  /** Added to MAIL FROM, e.g. "BODY=8BITMIME", "RET=HDRS". */
  readonly mail: readonly string[];
  /** Added to RCPT TO, by recipient address as given in the envelope. */
  readonly rcpt: ReadonlyMap<string, readonly string[]>;
}

type Internals = { _supportedExtensions?: string[]; _sendCommand(str: string, logStr?: string): void };

export function extensionsOf(conn: SMTPConnection): HopExtensions {
  const ext = (conn as unknown as Internals)._supportedExtensions ?? [];
  return { eightBitMime: ext.includes("8BITMIME"), smtputf8: ext.includes("SMTPUTF8"), dsn: ext.includes("DSN") };
}

const MAIL = /^MAIL FROM:<[^>]*>/i;
const RCPT = /^RCPT TO:<([^>]*)>/i;

/** Appends `extra` to a command line, skipping a keyword the line already carries. */
function append(line: string, extra: readonly string[] | undefined): string {
  if (!extra?.length) return line;
  const present = new Set(line.split(" ").slice(2).map((p) => p.split("=")[0]!.toUpperCase()));
  const add = extra.filter((p) => !present.has(p.split("=")[0]!.toUpperCase()));
  return add.length ? `${line} ${add.join(" ")}` : line;
}

/** Installs the hook on a connection; `set` names the parameters of the next transaction. */
export function paramHook(conn: SMTPConnection): { set(params: EsmtpParams | null): void } {
  const internals = conn as unknown as Internals;
  const write = internals._sendCommand.bind(conn);
  let current: EsmtpParams | null = null;
  internals._sendCommand = (str: string, logStr?: string) => {
    if (current) {
      if (MAIL.test(str)) str = append(str, current.mail);
      else {
        const rcpt = RCPT.exec(str);
        if (rcpt) str = append(str, current.rcpt.get(rcpt[1]!));
      }
    }
    write(str, logStr);
  };
  return { set: (params) => void (current = params) };
}
