// The envelope as the queue stores it: the addresses the relay policy checked (RFC 5321
// 4.5.1's domainless postmaster made a full address, IDN domains in the ASCII form the
// routing matched) and the ESMTP parameters smtp-server parsed (BODY=, SMTPUTF8, DSN).

import type { SMTPServerAddress, SMTPServerEnvelope } from "smtp-server";
import type { Config } from "../config/types.ts";
import type { NewMessage } from "../queue/store.ts";
import { parseMailbox, type Mailbox } from "./address.ts";

type Notify = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY";
type Recipient = NewMessage["recipients"][number];

/**
 * RCPT TO:<postmaster> without a domain must be accepted (RFC 5321 4.5.1): it stands for
 * the postmaster of our first relay domain, or of our host name when there is none (where
 * the relay policy then decides as for any address).
 */
export function postmaster(config: Config): Mailbox | undefined {
  const [first] = config.relay.domains.keys();
  return parseMailbox(`postmaster@${first ?? config.hostname}`);
}

/**
 * The address to pass on: as the client wrote it, unless its domain was rewritten to be
 * matched (an IDN in Unicode, which smtp-server makes of every A-label: the routed ASCII form).
 */
export function checkedAddress(m: Mailbox): string {
  if (m.isLiteral) return m.address;
  const written = m.address.slice(m.address.lastIndexOf("@") + 1).toLowerCase();
  return written === m.domain ? m.address : `${m.localPart}@${m.domain}`;
}

/** BODY=, SMTPUTF8 and RET/ENVID of the transaction, as the queue keeps them. */
export function envelopeParams(env: SMTPServerEnvelope): Pick<NewMessage, "bodyType" | "smtputf8" | "dsn"> {
  const args = (env.mailFrom && env.mailFrom.args) || {};
  const body = typeof args.BODY === "string" ? args.BODY.toUpperCase() : null;
  const ret = env.dsn?.ret ? (env.dsn.ret.toUpperCase() as "FULL" | "HDRS") : null;
  const envid = env.dsn?.envid ?? null;
  return {
    bodyType: body === "7BIT" || body === "8BITMIME" ? body : null,
    smtputf8: !!env.smtpUtf8,
    dsn: ret || envid ? { ret, envid } : null,
  };
}

/** The recipients with their NOTIFY and ORCPT (xtext decoded), each address once; `parsed[i]` is rcpts[i] parsed. */
export function recipientList(rcpts: readonly SMTPServerAddress[], parsed: readonly (Mailbox | undefined)[], route: (m: Mailbox) => string): Recipient[] {
  const seen = new Set<string>();
  const out: Recipient[] = [];
  for (const [i, r] of rcpts.entries()) {
    const m = parsed[i];
    if (!m || seen.has(r.address.toLowerCase())) continue;
    seen.add(r.address.toLowerCase());
    out.push({ address: r.address, route: route(m), notify: (r.dsn?.notify as Notify[] | undefined) ?? null, orcpt: r.dsn?.orcpt ?? null });
  }
  return out;
}
