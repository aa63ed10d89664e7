// A real SMTP next hop for the tests (smtp-server on loopback) that records every message
// byte for byte and can be told to refuse recipients or data with any reply.

import { SMTPServer } from "smtp-server";

export interface Received {
  readonly from: string;
  readonly to: string[];
  readonly raw: Buffer;
}

export interface SinkBehaviour {
  /** Reply for RCPT TO; undefined accepts. */
  rcpt?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** Reply after DATA; undefined accepts. */
  data?: (msg: Received, attempt: number) => { code: number; message: string } | undefined;
  /** Speak LMTP; with it, the reply after DATA for each recipient (undefined accepts). */
  lmtp?: (address: string, attempt: number) => { code: number; message: string } | undefined;
}

class ReplyErr extends Error {
  constructor(readonly responseCode: number, message: string) {
    super(message);
  }
}

export class Sink {
  readonly messages: Received[] = [];
  readonly errors: Error[] = [];
  private rcptAttempts = new Map<string, number>();
  private dataAttempts = 0;
  private server: SMTPServer | null = null;
  port = 0;

  constructor(private readonly behaviour: SinkBehaviour = {}) {}

  static async start(behaviour: SinkBehaviour = {}, port = 0): Promise<Sink> {
    const sink = new Sink(behaviour);
    await sink.listen(port);
    return sink;
  }

  async listen(port = this.port): Promise<void> {
    const server = new SMTPServer({
      name: "sink.test",
      lmtp: !!this.behaviour.lmtp,
      authOptional: true,
      disabledCommands: ["AUTH"],
      hideSTARTTLS: true,
      disableReverseLookup: true,
      logger: false,
      onRcptTo: (addr, _session, cb) => {
        const n = (this.rcptAttempts.get(addr.address) ?? 0) + 1;
        this.rcptAttempts.set(addr.address, n);
        const r = this.behaviour.rcpt?.(addr.address, n);
        cb(r ? new ReplyErr(r.code, r.message) : null);
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          const msg: Received = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            to: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(chunks),
          };
          const attempt = ++this.dataAttempts;
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
      server.listen(port, "127.0.0.1", () => resolve());
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
    return `${this.behaviour.lmtp ? "lmtp" : "smtp"}://127.0.0.1:${this.port}`;
  }
}
