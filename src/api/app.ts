// The HTTP send API: POST /api/v1/messages with a per-application key. The message goes
// through the same queue as SMTP mail (durable before the 202), signed with DKIM when the
// From: domain has a key. Every error is JSON.

import { Hono } from "hono";
import { Readable } from "node:stream";
import { routeFor } from "../checks/relay-policy.ts";
import type { ClientInfo, ContentCheck } from "../checks/types.ts";
import type { RateState } from "../state/types.ts";
import type { Config } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { enqueueWhole } from "../queue/accept.ts";
import { splitMessage } from "../queue/message.ts";
import type { QueueStore } from "../queue/store.ts";
import { parseMailbox, type Mailbox } from "../smtp/address.ts";
import { receivedHeader } from "../smtp/received.ts";
import { signableBytes } from "../smtp/signable.ts";
import { errorBody } from "../admin/errors.ts";
import type { ApiKey, ApiKeyStore } from "./keys.ts";
import { composeJson, composeRaw, RequestError, type Composed } from "./compose.ts";

export interface SendApiDeps {
  readonly config: () => Config;
  readonly keys: ApiKeyStore;
  readonly store: QueueStore;
  /** Key rates live in the policy state: shared by a cluster's nodes. */
  readonly rates: RateState;
  /** DKIM signing (or nothing), from the content pipeline. */
  readonly sign: () => ContentCheck | null;
  /** Whether that signer will sign for this client and header section (see Pipeline.signs). */
  readonly signs?: (client: ClientInfo, head: string | null) => boolean;
  readonly clientIp: (req: Request, env: unknown) => string;
  readonly onQueued: () => void;
  readonly log: Logger;
  readonly metrics: Metrics;
}

class HttpError extends Error {
  constructor(readonly status: 400 | 401 | 403 | 413 | 415 | 429 | 500, readonly code: string, message: string) {
    super(message);
  }
}

const domainOf = (address: string) => address.slice(address.lastIndexOf("@") + 1).toLowerCase();

export function createSendApi(deps: SendApiDeps): Hono {
  const app = new Hono();

  app.post("/api/v1/messages", async (c) => {
    const config = deps.config();
    const key = authenticate(c.req.header("authorization"));
    if (key.rateLimit && (await deps.rates.take([{ key: `apikey ${key.id}`, limit: key.rateLimit }], Date.now())) !== -1) {
      c.header("Retry-After", String(Math.ceil(key.rateLimit.windowMs / key.rateLimit.messages / 1000)));
      throw new HttpError(429, "rate_limited", `key ${key.name} is over its rate of ${key.rateLimit.messages} messages per ${key.rateLimit.windowMs / 1000} s`);
    }
    const composed = await compose(c.req.raw, c.req.header("content-type") ?? "", new URL(c.req.url).searchParams, config.smtp.maxMessageSize);
    // The key may only send as its own domains, in the envelope and in the From: header alike.
    for (const address of [composed.envelope.from, ...composed.fromHeader]) {
      if (!key.domains.includes(domainOf(address))) throw new HttpError(403, "sender_not_allowed", `key ${key.name} may not send as ${address}; its domains: ${key.domains.join(", ")}`);
    }
    const recipients = composed.envelope.to.map((a) => parseMailbox(a)).filter((m): m is Mailbox => !!m);
    const unroutable = recipients.find((r) => !routeFor(config.relay, r, config.outbound.mxDelivery));
    if (unroutable) throw new HttpError(400, "no_route", `no route to ${unroutable.domain} (outbound.mx_delivery is off and there is no smarthost)`);
    if (recipients.length > config.smtp.maxRecipients) throw new HttpError(400, "too_many_recipients", `at most ${config.smtp.maxRecipients} recipients per message`);

    const now = Date.now();
    const ip = deps.clientIp(c.req.raw, c.env);
    const id = deps.store.newId(now);
    const client = { ip, port: 0, hostname: "", helo: `api-key-${key.id}`, secure: new URL(c.req.url).protocol === "https:", trusted: false, user: `api:${key.name}` };
    // A raw message we sign is made 7-bit with short lines first (smtp/signable.ts); MailComposer's already is.
    const raw = deps.signs?.(client, Buffer.from(splitMessage(composed.raw).head).toString("latin1")) ? await signableBytes(composed.raw) : composed.raw;
    const { head: clientHead, body } = splitMessage(raw);
    const signer = deps.sign();
    const signed = signer
      ? await signer({ client, sender: composed.envelope.from, recipients, localDomains: [], message: () => Readable.from([raw]), size: raw.length, head: Buffer.from(clientHead).toString("latin1") })
      : null;
    const trace = receivedHeader({ client, byHost: config.hostname, protocol: client.secure ? "HTTPS" : "HTTP", queueId: id, tls: null, forRecipient: recipients.length === 1 ? recipients[0]!.address : null, date: new Date(now) });
    const head = Buffer.concat([Buffer.from(trace + (signed?.add ?? []).map((h) => `${h}\r\n`).join(""), "latin1"), clientHead]);
    await enqueueWhole(deps.store, config, { id, sender: composed.envelope.from, recipients, head, body, receivedAt: now, clientIp: ip });
    deps.metrics.messagesAccepted.inc();
    deps.log.info("message accepted", { via: "api", key: key.name, client_ip: ip, queue_id: id, from: composed.envelope.from, rcpt_count: recipients.length, size: head.length + body.length });
    deps.onQueued();
    return c.json({ id, from: composed.envelope.from, recipients: recipients.length }, 202);
  });

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    if (err instanceof HttpError || err instanceof RequestError) {
      if (err.status === 401) c.header("WWW-Authenticate", 'Bearer realm="mailraven-api"');
      return c.json(errorBody(err.code, err.message), err.status);
    }
    deps.log.error("send API request failed", { path: c.req.path, error: err });
    return c.json(errorBody("internal", "internal error; see the log"), 500);
  });
  return app;

  function authenticate(header: string | undefined): ApiKey {
    const token = /^Bearer (\S+)$/i.exec(header ?? "")?.[1] ?? "";
    const key = deps.keys.verify(token);
    if (!key) {
      deps.log.warn("send API authentication failed", { had_token: token !== "" });
      throw new HttpError(401, "unauthorized", "a valid API key is required (Authorization: Bearer mrk_...)");
    }
    return key;
  }
}

async function compose(req: Request, contentType: string, query: URLSearchParams, maxSize: number): Promise<Composed> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  // JSON carries attachments in base64: 4/3 of the message, plus the JSON around it.
  if (declared > maxSize * 1.4 + 65_536) throw new HttpError(413, "too_large", `the request is ${declared} bytes; messages are limited to ${maxSize}`);
  if (/^message\/rfc822\b/i.test(contentType)) {
    return composeRaw(Buffer.from(await req.arrayBuffer()), { from: query.get("from") ?? undefined, to: query.getAll("to") }, maxSize);
  }
  if (!/^application\/json\b/i.test(contentType)) throw new HttpError(415, "unsupported_media_type", "send application/json, or message/rfc822 with ?from=...&to=...");
  let body: unknown;
  try {
    body = await req.json();
  } catch {
    throw new HttpError(400, "bad_json", "the body is not valid JSON");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new HttpError(400, "bad_json", "the body must be a JSON object");
  return composeJson(body as Record<string, unknown>, maxSize);
}
