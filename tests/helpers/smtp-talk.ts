// A raw SMTP client for dialog tests: send exact bytes, read exact replies.

import { connect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";

export interface Reply {
  readonly code: number;
  readonly lines: readonly string[];
  /** Last line without the code, e.g. "5.7.1 Relaying denied". */
  readonly text: string;
}

export class SmtpTalk {
  private buf = "";
  private replies: Reply[] = [];
  private waiting: ((r: Reply | null) => void) | null = null;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(public socket: Socket) {
    this.closed = new Promise((resolve) => (this.onClosed = resolve));
    this.listen(socket);
  }

  private onClosed: () => void = () => {};

  private listen(socket: Socket): void {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => this.onData(d));
    socket.once("close", () => {
      if (socket !== this.socket) return; // the plain socket under a TLS one
      this.ended = true;
      this.waiting?.(null);
      this.onClosed();
    });
    socket.on("error", () => {});
  }

  static connect(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<SmtpTalk> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host: opts.host ?? "127.0.0.1", localAddress: opts.localAddress }, () => {
        socket.off("error", reject);
        resolve(new SmtpTalk(socket));
      });
      socket.once("error", reject);
    });
  }

  /** Implicit TLS (port 465): connects and completes the handshake (any certificate). */
  static connectTls(port: number, opts: { host?: string; servername?: string; localAddress?: string } = {}): Promise<SmtpTalk> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect(
        { port, host: opts.host ?? "127.0.0.1", servername: opts.servername ?? "localhost", ...(opts.localAddress ? { localAddress: opts.localAddress } : {}), rejectUnauthorized: false },
        () => {
          socket.off("error", reject);
          resolve(new SmtpTalk(socket));
        },
      );
      socket.once("error", reject);
    });
  }

  /** Implicit TLS (port 465): connects, completes the handshake and reads the greeting. */
  static async openTls(port: number, opts: { host?: string; servername?: string; localAddress?: string } = {}): Promise<{ talk: SmtpTalk; greeting: Reply }> {
    const talk = await SmtpTalk.connectTls(port, opts);
    return { talk, greeting: await talk.reply() };
  }

  /** Sends STARTTLS and, on 220, completes the handshake (any certificate); returns the STARTTLS reply. */
  async startTls(servername = "localhost"): Promise<Reply> {
    const r = await this.send("STARTTLS");
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners("data");
    const secure: TLSSocket = await new Promise((resolve, reject) => {
      const s = tlsConnect({ socket: plain, servername, rejectUnauthorized: false }, () => resolve(s));
      s.once("error", reject);
    });
    this.socket = secure;
    this.listen(secure);
    return r;
  }

  /** Connects and reads the greeting. */
  static async open(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<{ talk: SmtpTalk; greeting: Reply }> {
    const talk = await SmtpTalk.connect(port, opts);
    return { talk, greeting: await talk.reply() };
  }

  reply(timeoutMs = 10_000): Promise<Reply> {
    const next = this.replies.shift();
    if (next) return Promise.resolve(next);
    if (this.ended) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
      this.waiting = (r) => {
        clearTimeout(timer);
        this.waiting = null;
        r ? resolve(r) : reject(new Error("connection closed"));
      };
    });
  }

  write(raw: string | Uint8Array): void {
    this.socket.write(raw);
  }

  async send(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** EHLO, MAIL, RCPT..., DATA, body, "." ; returns the final reply (and throws on an earlier failure). */
  async transaction(from: string, to: string[], body: string): Promise<Reply> {
    const mail = await this.send(`MAIL FROM:<${from}>`);
    if (mail.code !== 250) return mail;
    for (const r of to) {
      const rc = await this.send(`RCPT TO:<${r}>`);
      if (rc.code !== 250) return rc;
    }
    const data = await this.send("DATA");
    if (data.code !== 354) return data;
    this.write(body.endsWith("\r\n") ? `${body}.\r\n` : `${body}\r\n.\r\n`);
    return this.reply();
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    let lines: string[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf("\r\n")) !== -1) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      lines.push(line);
      if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
        const reply = { code: Number(line.slice(0, 3)), lines, text: line.slice(4) };
        lines = [];
        if (this.waiting) this.waiting(reply);
        else this.replies.push(reply);
      }
    }
    if (lines.length) this.buf = lines.map((l) => `${l}\r\n`).join("") + this.buf;
  }
}
