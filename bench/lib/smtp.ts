// A minimal raw SMTP client for load generation (no pipelining): write a command, wait for the
// complete reply. Loopback only.

import { connect, type Socket } from "node:net";

export const HOST = "127.0.0.1";

export interface Reply {
  readonly code: number;
  readonly text: string;
}

export class SmtpError extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

interface Waiter {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class SmtpConn {
  private buf = "";
  private waiter: Waiter | null = null;
  private failure: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.setEncoding("latin1");
    sock.on("data", (d: string) => {
      this.buf += d;
      this.pump();
    });
    sock.on("error", (e: Error) => this.fail(new SmtpError("socket", e.message)));
    sock.on("close", () => this.fail(new SmtpError("closed", "connection closed by the server")));
  }

  /** Resolves once the TCP connection is established (the greeting is read with reply()). */
  static open(port: number, timeoutMs: number, localAddress?: string): Promise<SmtpConn> {
    return new Promise((resolve, reject) => {
      const sock = connect({ host: HOST, port, ...(localAddress ? { localAddress } : {}) });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new SmtpError("connect", "connect timeout"));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeListener("error", onError);
        resolve(new SmtpConn(sock));
      });
      const onError = (e: Error) => {
        clearTimeout(timer);
        reject(new SmtpError("connect", e.message));
      };
      sock.once("error", onError);
    });
  }

  /** The next complete reply (the last line is "NNN " or a bare "NNN"). */
  reply(timeoutMs: number): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (this.failure && !this.buf) return reject(this.failure);
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new SmtpError("timeout", `no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
      this.pump();
    });
  }

  write(data: string | Uint8Array): void {
    this.sock.write(data);
  }

  /** Sends one command line and returns its reply. */
  command(line: string, timeoutMs: number): Promise<Reply> {
    this.sock.write(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  /** Sends one command and throws unless the reply has the expected code. */
  async expect(line: string, code: number, timeoutMs: number): Promise<Reply> {
    const r = await this.command(line, timeoutMs);
    if (r.code !== code) throw new SmtpError(`${verb(line)} ${r.code}`, r.text.trim());
    return r;
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Best-effort QUIT: waits briefly for 221 so the server closes first, then destroys. */
  async quit(timeoutMs = 2000): Promise<void> {
    if (!this.failure) {
      try {
        await this.command("QUIT", timeoutMs);
      } catch {
        // the server may already be gone
      }
    }
    this.destroy();
  }

  destroy(): void {
    this.sock.destroy();
  }

  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    let start = 0;
    for (;;) {
      const nl = this.buf.indexOf("\n", start);
      if (nl < 0) break;
      const line = this.buf.slice(start, nl);
      start = nl + 1;
      if (/^\d{3}(?: |\r?$)/.test(line)) {
        const text = this.buf.slice(0, start);
        this.buf = this.buf.slice(start);
        this.waiter = null;
        clearTimeout(w.timer);
        w.resolve({ code: Number(line.slice(0, 3)), text });
        return;
      }
    }
    if (this.failure) {
      this.waiter = null;
      clearTimeout(w.timer);
      w.reject(this.failure);
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.pump();
  }
}

function verb(line: string): string {
  return (line.split(/[ :]/)[0] ?? line).toUpperCase();
}

/** A message of exactly `size` bytes before the terminating ".", in DATA wire form with the dot. */
export function buildMessage(size: number): Uint8Array {
  const head =
    "From: <s@src.test>\r\n" +
    "To: <r@bench.test>\r\n" +
    "Subject: mailraven benchmark\r\n" +
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
    "Message-ID: <bench@src.test>\r\n" +
    "\r\n";
  let body = "";
  const line = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n"; // 78 bytes, never starts with "."
  while (head.length + body.length + line.length <= size) body += line;
  const pad = size - head.length - body.length;
  if (pad >= 3) body += "x".repeat(pad - 2) + "\r\n";
  return new TextEncoder().encode(`${head}${body}.\r\n`);
}

/** True when something on 127.0.0.1:port answers with a 220 greeting. */
export async function bannerOk(port: number, timeoutMs = 2000): Promise<boolean> {
  try {
    const c = await SmtpConn.open(port, timeoutMs);
    const r = await c.reply(timeoutMs).catch(() => null);
    await c.quit(500);
    return r?.code === 220;
  } catch {
    return false;
  }
}
