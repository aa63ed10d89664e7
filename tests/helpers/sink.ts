// A real SMTP next hop for the tests (smtp-server on loopback) that records every message
// byte for byte and can be told to refuse the connection, recipients or data with any reply,
// and to offer STARTTLS. As root it can listen on 127.0.0.N:25 to play an MX host.

import { SMTPServer } from "smtp-server";

export interface Received {
  readonly from: string;
  readonly to: string[];
  readonly raw: Buffer;
  /** The TLS version of the session ("TLSv1.3") when it used STARTTLS, else null. */
  readonly tls: string | null;
  /** MAIL FROM parameters as smtp-server parsed them (keys upper case, xtext decoded). */
  readonly mailParams: Record<string, string | true>;
  /** RCPT TO parameters, by recipient. */
  readonly rcptParams: Record<string, Record<string, string | true>>;
}

export interface SinkBehaviour {
  /** Reply instead of the greeting, then hang up (a 4xx or 5xx banner); undefined greets. */
  greeting?: (attempt: number) => { code: number; message: string } | undefined;
  /** Offer STARTTLS with this key and certificate (PEM). */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Reply for RCPT TO; undefined accepts. */
  rcpt?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** Reply after DATA; undefined accepts. */
  data?: (msg: Received, attempt: number) => { code: number; message: string } | undefined;
  /** Awaited after the message's last byte, before the reply to DATA: a slow or hung next hop. */
  hold?: (msg: Received, attempt: number) => Promise<void> | void;
  /** Speak LMTP; with it, the reply after DATA for each recipient (undefined accepts). */
  lmtp?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** EHLO extensions not to offer (smtp-server offers PIPELINING, 8BITMIME, SMTPUTF8 and DSN, never CHUNKING). */
  hide?: readonly ("PIPELINING" | "8BITMIME" | "SMTPUTF8" | "DSN")[];
}

class ReplyErr extends Error {
  constructor(readonly responseCode: number, message: string) {
    super(message);
  }
}

export class Sink {
  readonly messages: Received[] = [];
  readonly errors: Error[] = [];
  /** Every message whose data arrived, whatever the reply (also those still held). */
  readonly dataStarted: Received[] = [];
  private rcptAttempts = new Map<string, number>();
  private dataAttempts = 0;
  private connections = 0;
  private server: SMTPServer | null = null;
  port = 0;

  constructor(private readonly behaviour: SinkBehaviour = {}, readonly host = "127.0.0.1") {}

  static async start(behaviour: SinkBehaviour = {}, port = 0, host = "127.0.0.1"): Promise<Sink> {
    const sink = new Sink(behaviour, host);
    await sink.listen(port);
    return sink;
  }

  /** Connections accepted so far (greeted or refused). */
  get connectionCount(): number {
    return this.connections;
  }

  async listen(port = this.port): Promise<void> {
    const tls = this.behaviour.tls;
    const server = new SMTPServer({
      name: "sink.test",
      lmtp: !!this.behaviour.lmtp,
      authOptional: true,
      disabledCommands: ["AUTH"],
      hideSTARTTLS: !tls,
      ...(tls ? { key: tls.key, cert: tls.cert } : {}),
      disableReverseLookup: true,
      logger: false,
      // smtp-server hides DSN unless told otherwise; a sink offers it unless `hide` says so.
      hideDSN: false,
      ...Object.fromEntries((this.behaviour.hide ?? []).map((e) => [`hide${e}`, true])),
      onConnect: (_session, cb) => {
        const r = this.behaviour.greeting?.(++this.connections);
        cb(r ? new ReplyErr(r.code, r.message) : null);
      },
      onRcptTo: (addr, _session, cb) => {
        const n = (this.rcptAttempts.get(addr.address) ?? 0) + 1;
        this.rcptAttempts.set(addr.address, n);
        const r = this.behaviour.rcpt?.(addr.address, n);
        cb(r ? new ReplyErr(r.code, r.message) : null);
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", async () => {
          const msg: Received = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            to: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(chunks),
            tls: session.secure ? ((session.tlsOptions as { version?: string } | false) || { version: "TLS" }).version ?? "TLS" : null,
            mailParams: (session.envelope.mailFrom && session.envelope.mailFrom.args) || {},
            rcptParams: Object.fromEntries(session.envelope.rcptTo.map((r) => [r.address, r.args || {}])),
          };
          const attempt = ++this.dataAttempts;
          this.dataStarted.push(msg);
          await this.behaviour.hold?.(msg, attempt);
          const lmtp = this.behaviour.lmtp;
          if (lmtp) {
            const replies = msg.to.map((rcpt) => lmtp(rcpt, attempt));
            const accepted = msg.to.filter((_, i) => !replies[i]);
            if (accepted.length) this.messages.push({ ...msg, to: accepted });
            return (cb as unknown as (e: null, r: (string | Error)[]) => void)(null, replies.map((r) => (r ? new ReplyErr(r.code, r.message) : "Stored")));
          }
          const r = this.behaviour.data?.(msg, attempt);
          if (r) return cb(new ReplyErr(r.code, r.message));
          this.messages.push(msg);
          cb(null, "Stored");
        });
      },
    });
    // A relay killed mid-delivery resets its connections; that is expected here.
    server.on("error", (err: Error) => this.errors.push(err));
    await new Promise<void>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(port, this.host, () => resolve());
    });
    this.server = server;
    this.port = (server.server.address() as { port: number }).port;
  }

  /** Stops listening (the next hop goes down); the port is kept for listen() again. */
  close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return Promise.resolve();
    for (const c of server.connections) (c as unknown as { _socket: { destroy(): void } })._socket.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  get route(): string {
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    return `${this.behaviour.lmtp ? "lmtp" : "smtp"}://${host}:${this.port}`;
  }
}
