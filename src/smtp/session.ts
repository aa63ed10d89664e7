// smtp-server hooks -> pipeline stages. Each hook builds the context for its stage, runs the
// stage's checks and turns the verdict into the reply; nothing else happens here.

import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from "smtp-server";
import type { ClientInfo, DataContext } from "../checks/types.ts";
import { runStage } from "../checks/types.ts";
import { routeFor } from "../checks/relay-policy.ts";
import type { Config } from "../config/types.ts";
import type { Live } from "../live.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Runtime } from "../runtime.ts";
import { anyContains } from "../net/cidr.ts";
import type { QueueStore } from "../queue/store.ts";
import type { Verdict } from "../verdict.ts";
import { parseMailbox, type Mailbox } from "./address.ts";
import { BodyCollector } from "./body.ts";
import { receivedHeader } from "./received.ts";

export interface SessionDeps {
  readonly runtime: Live<Runtime>;
  readonly store: QueueStore;
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
const encoder = new TextEncoder();

export function sessionHooks(deps: SessionDeps) {
  const { store, log, metrics } = deps;

  const client = (config: Config, s: SMTPServerSession): ClientInfo => ({
    ip: s.remoteAddress,
    port: s.remotePort,
    hostname: s.clientHostname || "",
    helo: s.hostNameAppearsAs || "",
    secure: s.secure,
    trusted: anyContains(config.relay.relayNetworks, s.remoteAddress),
  });

  return {
    onConnect(session: SMTPServerSession, callback: Callback) {
      metrics.connectionsTotal.inc();
      metrics.connectionsOpen.inc();
      log.info("connect", { cid: session.id, client_ip: session.remoteAddress });
      callback();
    },

    onClose(session: SMTPServerSession) {
      metrics.connectionsOpen.dec();
      log.info("disconnect", { cid: session.id, client_ip: session.remoteAddress, transactions: session.transaction - 1 });
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      const recipient = parseMailbox(address.address);
      if (!recipient) return callback(new ReplyError(501, "5.1.3 Bad recipient address syntax"));
      const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
      const { config, pipeline } = deps.runtime.get();
      runStage(pipeline.rcpt, { client: client(config, session), sender, recipient }).then(
        (v) => {
          if (v.kind === "accept") return callback();
          (v.kind === "reject" ? metrics.messagesRejected : metrics.messagesDeferred).inc({ stage: "rcpt", reason: v.reason });
          log.info("rcpt rejected", { cid: session.id, client_ip: session.remoteAddress, from: sender, rcpt: address.address, code: v.code, status: v.status, reason: v.reason });
          callback(replyFor(v));
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
      const recipients = session.envelope.rcptTo.map((r) => parseMailbox(r.address)).filter((m): m is Mailbox => !!m);
      const body = new BodyCollector(store.spool, id, config.queue.inlineMaxSize, config.smtp.maxMessageSize);
      const tls = session.tlsOptions ? { version: session.tlsOptions.version ?? "TLS", cipher: session.tlsOptions.name } : null;
      body.prepend(
        encoder.encode(
          receivedHeader({
            client: info,
            byHost: config.hostname,
            protocol: session.transmissionType || "ESMTP",
            queueId: id,
            tls,
            forRecipient: recipients.length === 1 ? recipients[0]!.address : null,
            date: new Date(started),
          }),
        ),
      );
      stream.on("data", (chunk: Buffer) => body.push(chunk));
      stream.on("error", (err) => {
        body.discard();
        failTemporarily(session, "data stream failed", err, callback);
      });
      stream.on("end", async () => {
        const dataEnd = performance.now();
        body.end();
        const ctx: DataContext = {
          client: info,
          sender,
          recipients,
          size: body.size,
          sizeExceeded: body.overLimit || stream.sizeExceeded,
          bareNewline: body.bareNewline,
          hops: body.hops,
        };
        const fields = { cid: session.id, client_ip: info.ip, queue_id: id, from: sender, rcpt_count: recipients.length, size: body.size };
        try {
          const verdict = await runStage(pipeline.data, ctx);
          if (verdict.kind !== "accept") {
            body.discard();
            (verdict.kind === "reject" ? metrics.messagesRejected : metrics.messagesDeferred).inc({ stage: "data", reason: verdict.reason });
            log.info("message rejected", { ...fields, code: verdict.code, status: verdict.status, reason: verdict.reason, duration_ms: Date.now() - started });
            return callback(replyFor(verdict));
          }
          const inlineBody = await body.finish();
          await store.enqueue({
            id,
            sender,
            recipients: recipients.map((r) => ({ address: r.address, route: routeFor(config.relay, r)?.uri ?? "" })),
            inlineBody,
            size: body.total,
            receivedAt: started,
            clientIp: info.ip,
          });
        } catch (err) {
          body.discard();
          return failTemporarily(session, "queue write failed", err, callback);
        }
        metrics.messagesAccepted.inc();
        metrics.acceptSeconds.observe((performance.now() - dataEnd) / 1000);
        log.info("message accepted", { ...fields, code: 250, duration_ms: Date.now() - started });
        deps.onQueued();
        callback(null, `2.0.0 Ok: queued as ${id}`);
      });
    },
  };

  function failTemporarily(session: SMTPServerSession, what: string, err: unknown, callback: Callback) {
    log.error(what, { cid: session.id, client_ip: session.remoteAddress, error: err });
    callback(new ReplyError(451, "4.3.0 Local error in processing, try again later"));
  }
}
