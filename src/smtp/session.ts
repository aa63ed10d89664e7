// smtp-server hooks -> pipeline stages. Each hook builds the context for its stage, runs the
// stage's checks and turns the verdict into the reply; nothing else happens here.

import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from "smtp-server";
import type { UserStore } from "../users/store.ts";
import type { AuthGuard } from "./auth-guard.ts";
import type { ClientInfo, ContentCheck, ContentContext, DataContext } from "../checks/types.ts";
import { runStage } from "../checks/types.ts";
import { routeFor } from "../checks/relay-policy.ts";
import type { Config } from "../config/types.ts";
import type { Live } from "../live.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Runtime } from "../runtime.ts";
import { anyContains, clientKey } from "../net/cidr.ts";
import type { QueueStore } from "../queue/store.ts";
import { isStorageError, type DiskSpace } from "../queue/disk-space.ts";
import type { Verdict } from "../verdict.ts";
import { parseMailbox, type Mailbox } from "./address.ts";
import { BodyCollector } from "./body.ts";
import { checkedAddress, envelopeParams, postmaster, recipientList } from "./envelope.ts";
import { dropHeaders } from "./headers.ts";
import { receivedHeader } from "./received.ts";
import { signableCopy } from "./signable.ts";

export interface SessionDeps {
  readonly runtime: Live<Runtime>;
  /** Submission users and the brute-force guard; null where submission is not configured. */
  readonly users: UserStore | null;
  readonly authGuard: AuthGuard | null;
  readonly store: QueueStore;
  /** Free space on the state directory (queue.min_free_space). */
  readonly disk: DiskSpace;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Told after each commit so delivery starts without waiting for the next poll. */
  readonly onQueued: () => void;
}

type Callback = (err?: Error | null, message?: string) => void;

export class ReplyError extends Error {
  constructor(readonly responseCode: number, message: string) {
    super(message);
  }
}

const replyFor = (v: Exclude<Verdict, { kind: "accept" }>) => new ReplyError(v.code, `${v.status} ${v.text}`);
/** RFC 3463 4.3.1; never the error itself, which names paths and system calls. */
const NO_STORAGE = () => new ReplyError(452, "4.3.1 Insufficient system storage");

/** A header line from a check, made safe to put in the header section: no bare CR or LF, folding kept. */
function oneHeader(line: string): string {
  return line.replace(/\r?\n(?=[ \t])/g, "\r\n").replace(/\r(?!\n)|(?<!\r)\n/g, " ").replace(/\r\n(?![ \t])/g, " ");
}

export type ListenerMode = "mx" | "submission" | "smtps";

export function sessionHooks(deps: SessionDeps, connectVerdict: (sessionId: string) => Promise<Verdict> | null, mode: ListenerMode = "mx") {
  const { store, log, metrics } = deps;

  const client = (config: Config, s: SMTPServerSession): ClientInfo => ({
    ip: s.remoteAddress,
    port: s.remotePort,
    hostname: s.clientHostname || "",
    helo: s.hostNameAppearsAs || "",
    secure: s.secure,
    trusted: anyContains(config.relay.relayNetworks, s.remoteAddress),
    allowlisted: anyContains(config.defenses.allowlist, s.remoteAddress),
    user: typeof s.user === "string" ? s.user : null,
  });

  return {
    onConnect(session: SMTPServerSession, callback: Callback) {
      metrics.connectionsTotal.inc();
      metrics.connectionsOpen.inc();
      log.info("connect", { cid: session.id, client_ip: session.remoteAddress });
      const pending = connectVerdict(session.id);
      if (!pending) return callback();
      pending.then(
        (v) => {
          if (v.kind === "accept") return callback();
          metrics.connectionsRejected.inc({ reason: v.reason });
          log.info("connection refused", { cid: session.id, client_ip: session.remoteAddress, code: v.code, status: v.status, reason: v.reason });
          callback(replyFor(v));
        },
        // A check that throws fails open: connecting is not where mail gets lost.
        (err) => {
          log.error("connect check failed", { cid: session.id, client_ip: session.remoteAddress, error: err });
          callback();
        },
      );
    },

    onClose(session: SMTPServerSession) {
      metrics.connectionsOpen.dec();
      log.info("disconnect", { cid: session.id, client_ip: session.remoteAddress, transactions: session.transaction - 1 });
    },

    async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void) {
      const ip = session.remoteAddress;
      const { users, authGuard } = deps;
      // Never over clear text: the listener offers AUTH only after TLS; this makes sure.
      if (!users || !authGuard || !session.secure) return callback(new ReplyError(530, "5.7.0 Must issue a STARTTLS command first"));
      const key = clientKey(ip, deps.runtime.get().config.smtp.ipv6PrefixLength);
      // RFC 4954 6: 454 4.7.0 is the temporary failure; the password is not looked at.
      const refused = await authGuard.admit(key);
      if (refused) {
        metrics.authAttempts.inc({ result: refused === "busy" ? "busy" : "rate_limited" });
        log.warn("authentication not attempted", { cid: session.id, client_ip: ip, reason: refused === "busy" ? "all password checks busy" : "auth rate limit" });
        return callback(new ReplyError(454, refused === "busy" ? "4.7.0 Temporary authentication failure, try again later" : "4.7.0 Too many authentication attempts, try again later"));
      }
      users.verify(auth.username ?? "", auth.password ?? "").finally(() => authGuard.release()).then(
        async (user) => {
          if (user) {
            authGuard.succeeded(key);
            metrics.authAttempts.inc({ result: "ok" });
            log.info("authenticated", { cid: session.id, client_ip: ip, user: user.name, method: auth.method });
            return callback(null, { user: user.name });
          }
          const blocked = await authGuard.failed(key);
          metrics.authAttempts.inc({ result: blocked ? "blocked" : "failed" });
          // The name is logged to spot attacks; the password never is.
          log.warn("authentication failed", { cid: session.id, client_ip: ip, user: String(auth.username ?? "").slice(0, 64), method: auth.method });
          callback(blocked ? new ReplyError(421, "4.7.0 Too many failed authentications; try again later") : new ReplyError(535, "5.7.8 Authentication credentials invalid"));
        },
        (err) => failTemporarily(session, "authentication check failed", err, (e) => callback(e ?? null)),
      );
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      if (mode !== "mx") {
        if (!session.secure) return callback(new ReplyError(530, "5.7.0 Must issue a STARTTLS command first"));
        if (!session.user) return callback(new ReplyError(530, "5.7.0 Authentication required"));
      }
      // Postfix's queue_minfree: defer before the client sends a message we could not store.
      if (deps.disk.low()) {
        metrics.lowDiskRefusals.inc();
        log.warn("insufficient storage", { cid: session.id, client_ip: session.remoteAddress, free_bytes: deps.disk.freeBytes(), code: 452, status: "4.3.1" });
        return callback(NO_STORAGE());
      }
      const sender = address.address === "" ? null : parseMailbox(address.address);
      if (sender === undefined) return callback(new ReplyError(501, "5.1.7 Bad sender address syntax"));
      const { config, pipeline } = deps.runtime.get();
      runStage(pipeline.mail, { client: client(config, session), sender }).then(
        (v) => {
          if (v.kind !== "accept") return refuse(session, "mail", v, { from: address.address }, callback);
          if (sender) address.address = checkedAddress(sender); // what smtp-server stores as the envelope sender
          callback();
        },
        (err) => failTemporarily(session, "mail check failed", err, callback),
      );
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      const { config, pipeline } = deps.runtime.get();
      const recipient = address.address.toLowerCase() === "postmaster" ? postmaster(config) : parseMailbox(address.address);
      if (!recipient) return callback(new ReplyError(501, "5.1.3 Bad recipient address syntax"));
      const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
      runStage(pipeline.rcpt, { client: client(config, session), sender, recipient }).then(
        (v) => {
          if (v.kind !== "accept") return refuse(session, "rcpt", v, { from: sender, rcpt: address.address }, callback);
          // The envelope keeps the address the policy checked; that is the one delivered to.
          address.address = checkedAddress(recipient);
          callback();
        },
        (err) => failTemporarily(session, "rcpt check failed", err, callback),
      );
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: Callback) {
      const started = Date.now();
      const { config, pipeline } = deps.runtime.get();
      const id = store.newId(started);
      const info = client(config, session);
      const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
      const parsed = session.envelope.rcptTo.map((r) => parseMailbox(r.address));
      const recipients = parsed.filter((m): m is Mailbox => !!m);
      let body = new BodyCollector(store.spool, id, config.queue.inlineMaxSize, config.smtp.maxMessageSize, config.smtp);
      stream.on("data", (chunk: Buffer) => body.push(chunk));
      stream.on("error", (err: Error & { code?: string }) => {
        body.discard();
        // The client went away, timed out or abandoned a BDAT transaction: nothing to answer.
        if (err.code === "ECONNECTION" || err.code === "EABORTED") {
          log.info("message abandoned", { cid: session.id, client_ip: session.remoteAddress, queue_id: id, reason: err.message });
          return callback(err);
        }
        failTemporarily(session, "data stream failed", err, callback);
      });
      stream.on("end", async () => {
        const dataEnd = performance.now();
        body.end();
        const fields = { cid: session.id, client_ip: info.ip, queue_id: id, from: sender, rcpt_count: recipients.length, size: body.size };
        if (body.writeError) return storageFailed(body.writeError, fields, callback);
        try {
          const ctx: DataContext = {
            client: info,
            sender,
            recipients,
            size: body.size,
            sizeExceeded: body.overLimit || stream.sizeExceeded,
            bareNewline: body.bareNewline,
            hops: body.hops,
            nulOctets: body.nul && config.smtp.nulBytes === "reject",
            headerTooLarge: body.headerTooLarge,
          };
          let verdict = await runStage(pipeline.data, ctx);
          // Mail we sign is made 7-bit with short lines first, so no later hop changes what was signed.
          const shape = body.scan.shape;
          if (verdict.kind === "accept" && (shape.eightBit || shape.longLines) && pipeline.signs?.(info, body.headText())) {
            const copy = await signableCopy(body, store.spool, id, config.queue.inlineMaxSize, config.smtp.maxMessageSize);
            if (!copy) log.warn("message could not be made 7-bit before signing; signed as received", { cid: session.id, queue_id: id });
            body = copy ?? body;
          }
          const edits = verdict.kind === "accept" && pipeline.content.length ? await runContent(pipeline.content, { ...ctx, config, body }) : null;
          if (edits && edits.verdict.kind !== "accept") verdict = edits.verdict;
          if (verdict.kind !== "accept") {
            body.discard();
            return refuse(session, edits && edits.verdict.kind !== "accept" ? "content" : "data", verdict, { ...fields, duration_ms: Date.now() - started }, callback);
          }
          const tls = session.tlsOptions ? { version: session.tlsOptions.version ?? "TLS", cipher: session.tlsOptions.name } : null;
          const trace = receivedHeader({
            client: info,
            byHost: config.hostname,
            protocol: session.transmissionType || "ESMTP",
            queueId: id,
            tls,
            forRecipient: recipients.length === 1 ? recipients[0]!.address : null,
            date: new Date(started),
          });
          const clientHead = body.headText();
          const drops = edits?.drops ?? [];
          const keptHead = clientHead === null ? "" : drops.length ? dropHeaders(clientHead, (n, v) => drops.some((d) => d(n, v))) : clientHead;
          const head = Buffer.from(trace + (edits?.add ?? []).map((h) => `${h}\r\n`).join("") + keptHead, "latin1");
          const inlineBody = await body.finish();
          await store.enqueue({
            id,
            sender,
            recipients: recipientList(session.envelope.rcptTo, parsed, (r) => routeFor(config.relay, r, config.outbound.mxDelivery)?.uri ?? ""),
            head,
            inlineBody,
            size: head.length + body.bodyLength,
            receivedAt: started,
            clientIp: info.ip,
            content: body.scan.shape,
            ...envelopeParams(session.envelope),
          });
        } catch (err) {
          body.discard();
          if (isStorageError(err)) return storageFailed(err, fields, callback);
          return failTemporarily(session, "queue write failed", err, callback);
        }
        metrics.messagesAccepted.inc();
        if (session.secure) metrics.messagesAcceptedTls.inc();
        metrics.acceptSeconds.observe((performance.now() - dataEnd) / 1000);
        log.info("message accepted", { ...fields, code: 250, duration_ms: Date.now() - started });
        deps.onQueued();
        callback(null, `2.0.0 Ok: queued as ${id}`);
      });
    },
  };

  /** Content checks in order; the first refusal ends them, header edits of the others add up. */
  async function runContent(checks: readonly ContentCheck[], c: DataContext & { config: Config; body: BodyCollector }) {
    const add: string[] = [];
    const drops: ((name: string, value: string) => boolean)[] = [];
    const ctx: ContentContext = {
      client: c.client,
      sender: c.sender,
      recipients: c.recipients,
      localDomains: [...new Set(c.recipients.filter((r) => c.config.relay.domains.has(r.domain)).map((r) => r.domain))],
      message: () => c.body.message(),
      size: c.size,
      head: c.body.headText(),
    };
    for (const check of checks) {
      const result = await check(ctx);
      if (result.verdict.kind !== "accept") return { verdict: result.verdict, add, drops };
      add.push(...(result.add ?? []).map(oneHeader));
      if (result.drop) drops.push(result.drop);
    }
    return { verdict: { kind: "accept" } as Verdict, add, drops };
  }

  function refuse(session: SMTPServerSession, stage: string, v: Exclude<Verdict, { kind: "accept" }>, fields: Record<string, unknown>, callback: Callback) {
    (v.kind === "reject" ? metrics.messagesRejected : metrics.messagesDeferred).inc({ stage, reason: v.reason });
    log.info(`${stage} refused`, { cid: session.id, client_ip: session.remoteAddress, ...fields, code: v.code, status: v.status, reason: v.reason });
    callback(replyFor(v));
  }

  /** The disk failed us (full, read-only, I/O error): 452 4.3.1, and the reserve looked at again. */
  function storageFailed(err: unknown, fields: Record<string, unknown>, callback: Callback) {
    deps.disk.forget();
    metrics.lowDiskRefusals.inc();
    log.error("message not stored", { ...fields, error: err, code: 452, status: "4.3.1" });
    callback(NO_STORAGE());
  }

  function failTemporarily(session: SMTPServerSession, what: string, err: unknown, callback: Callback) {
    log.error(what, { cid: session.id, client_ip: session.remoteAddress, error: err });
    callback(new ReplyError(451, "4.3.0 Local error in processing, try again later"));
  }
}
