// A recipient probe, like Postfix's verify(8): ask a relay domain's next hop whether it would
// take mail for an address, without sending any. One session: greeting, EHLO (LHLO for LMTP),
// STARTTLS when offered, MAIL FROM:<>, RCPT TO:<address>, QUIT; never DATA. nodemailer's
// SMTPConnection speaks the protocol; it has no call for an envelope without a message, so
// MAIL and RCPT go through the two internals its own envelope code uses (checked by
// assertProbeCompatible at start-up, so a library upgrade that renames them fails loudly).

import SMTPConnection from "nodemailer/lib/smtp-connection";
import { sessionOptions } from "./smtp-client.ts";
import { demandsTls, type TlsPolicy } from "./tls-policy.ts";

/** ok: 2xx to RCPT; unknown: 5xx to RCPT; tempfail: anything else (no session, 4xx, MAIL refused, timeout). */
export type ProbeResult = { readonly kind: "ok" | "unknown" | "tempfail"; readonly reply: string };

export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
  readonly lmtp: boolean;
  /** The route's ?tls= policy: a probe never goes in clear text where delivery would not. */
  readonly tls: TlsPolicy;
}

export interface ProbeOptions {
  readonly heloName: string;
  /** The whole session, connect to QUIT. */
  readonly timeoutMs: number;
}

interface Internals {
  _responseActions: ((reply: string) => void)[];
  _sendCommand(line: string): void;
}

export function assertProbeCompatible(): void {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  if (typeof proto._sendCommand !== "function") throw new Error("nodemailer is incompatible: SMTPConnection._sendCommand is missing; pin the version in package.json");
  const probe = new SMTPConnection({ host: "127.0.0.1", port: 9 } as SMTPConnection.Options) as unknown as Partial<Internals>;
  if (!Array.isArray(probe._responseActions)) throw new Error("nodemailer is incompatible: SMTPConnection._responseActions is missing; pin the version in package.json");
}

/** One command, its reply (multi-line replies joined, as nodemailer reads them). */
function command(conn: SMTPConnection, line: string): Promise<string> {
  const c = conn as unknown as Internals;
  return new Promise((resolve) => {
    c._responseActions.push(resolve);
    c._sendCommand(line);
  });
}

const oneLine = (reply: string) => reply.replace(/\s+/g, " ").trim().slice(0, 300);

export function probeRecipient(target: ProbeTarget, address: string, opts: ProbeOptions): Promise<ProbeResult> {
  // smtp-server parsed it from one command line; this keeps a command of ours one line too.
  if (/[\x00-\x1f<>]/.test(address)) return Promise.resolve({ kind: "tempfail", reply: "not probed: the address has characters a RCPT command cannot carry" });
  // The same session as a delivery to that route, under the route's TLS policy.
  const conn = new SMTPConnection(sessionOptions(target, opts.heloName, opts.timeoutMs, opts.timeoutMs));
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: ProbeResult, quit: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (quit) conn.quit();
      else conn.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: "tempfail", reply: "4.4.2 no answer within the probe time limit" }, false), opts.timeoutMs);
    conn.on("error", (err: Error & { response?: string }) => finish({ kind: "tempfail", reply: oneLine(err.response ?? `4.4.1 ${err.message}`) }, false));
    conn.once("end", () => finish({ kind: "tempfail", reply: "4.4.2 the next hop closed the connection" }, false));
    conn.connect(async (err) => {
      if (err) return finish({ kind: "tempfail", reply: oneLine((err as { response?: string }).response ?? `4.4.1 ${err.message}`) }, false);
      if (demandsTls(target.tls) && !conn.secure) return finish({ kind: "tempfail", reply: "4.7.5 TLS required but not available" }, true);
      // The null sender, as for a bounce: the probe is about the recipient alone.
      const mail = await command(conn, "MAIL FROM:<>");
      if (!mail.startsWith("2")) return finish({ kind: "tempfail", reply: oneLine(mail) }, true);
      const rcpt = await command(conn, `RCPT TO:<${address}>`);
      const kind = rcpt.startsWith("2") ? "ok" : rcpt.startsWith("5") ? "unknown" : "tempfail";
      finish({ kind, reply: oneLine(rcpt) }, true);
    });
  });
}
