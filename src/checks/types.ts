// What the pipeline checks see. Connection-lifetime facts (ClientInfo) and transaction-
// lifetime facts (the envelope) are kept apart, so nothing leaks from one message to the next.

import type { Verdict } from "../verdict.ts";
import type { Mailbox } from "../smtp/address.ts";

export interface ClientInfo {
  readonly ip: string;
  readonly port: number;
  readonly hostname: string;
  readonly helo: string;
  readonly secure: boolean;
  /** The client is inside relay_networks and may relay to any domain. */
  readonly trusted: boolean;
  /** In defenses.allowlist: spared the defenses as relay_networks are (rate limits, greylisting, sender authentication), without their relaying rights. */
  readonly allowlisted?: boolean;
  /** The authenticated submission user, or null. */
  readonly user: string | null;
}

/** What is known when a client connects, before any command. */
export interface ConnectContext {
  readonly ip: string;
  readonly port: number;
  /** In relay_networks or an allowlist: spared the connection-stage defenses. */
  readonly trusted: boolean;
}

export interface MailContext {
  readonly client: ClientInfo;
  /** The envelope sender; null for the null sender <>. */
  readonly sender: Mailbox | null;
}

export interface RcptContext {
  readonly client: ClientInfo;
  readonly sender: string;
  readonly recipient: Mailbox;
}

export interface DataContext {
  readonly client: ClientInfo;
  readonly sender: string;
  readonly recipients: readonly Mailbox[];
  readonly size: number;
  readonly sizeExceeded: boolean;
  readonly bareNewline: boolean;
  /** Received: headers already in the message. */
  readonly hops: number;
  /** NUL octets were found and smtp.nul_bytes is "reject". */
  readonly nulOctets: boolean;
  /** A header field or the header section went over smtp.max_header_size / max_header_section. */
  readonly headerTooLarge: boolean;
}

export type Check<C> = (ctx: C) => Verdict | Promise<Verdict>;

/** What content checks (authentication, spam, virus scanners) see after DATA. */
export interface ContentContext {
  readonly client: ClientInfo;
  readonly sender: string;
  readonly recipients: readonly Mailbox[];
  /** Domains of the recipients that are ours (relay.domains), for per-domain policy. */
  readonly localDomains: readonly string[];
  /** The client's message as received (no trace header of ours): header section then body. */
  message(): NodeJS.ReadableStream;
  readonly size: number;
  /** The client's header section, latin1, each line ending CRLF; null when it was too large to keep. */
  readonly head: string | null;
}

/**
 * A content check's finding: the verdict plus header edits. Headers in `add` are complete
 * lines without CRLF ("Authentication-Results: mx.example.org; spf=pass ..."), put on top
 * of the message; `drop` removes client headers (e.g. forged Authentication-Results).
 */
export interface ContentResult {
  readonly verdict: Verdict;
  readonly add?: readonly string[];
  readonly drop?: (name: string, value: string) => boolean;
}

export type ContentCheck = (ctx: ContentContext) => Promise<ContentResult>;

export interface Pipeline {
  readonly connect: readonly Check<ConnectContext>[];
  /** The connect stage on submission ports: users connect from anywhere, so no DNS lists. */
  readonly connectSubmission: readonly Check<ConnectContext>[];
  readonly mail: readonly Check<MailContext>[];
  readonly rcpt: readonly Check<RcptContext>[];
  readonly data: readonly Check<DataContext>[];
  readonly content: readonly ContentCheck[];
  /** DKIM signing alone, for mail that does not come through SMTP (the send API). */
  readonly signer: ContentCheck | null;
  /** Whether the signer will sign mail from this client with this header section (false without a signer). */
  readonly signs?: (client: ClientInfo, head: string | null) => boolean;
}

/** Runs a stage's checks in order; the first verdict that is not accept ends the stage. */
export async function runStage<C>(checks: readonly Check<C>[], ctx: C): Promise<Verdict> {
  for (const check of checks) {
    const v = await check(ctx);
    if (v.kind !== "accept") return v;
  }
  return { kind: "accept" };
}
