// Real scanning daemons for the tests, on loopback and in a temp dir each: Debian's spamd
// (SpamAssassin with its packaged rules, local tests only) and clamd (with a one-line signature
// database that detects the EICAR test file, since no real database can be downloaded here).
// Plus a "silent" TCP server that accepts and never answers, for timeout tests, and helpers to
// build a ContentContext around a message.

import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Subprocess } from "bun";
import type { ContentContext } from "../../src/checks/types.ts";
import { clamdPing } from "../../src/checks/content/clamd.ts";
import { spamdPing } from "../../src/checks/content/spamd.ts";
import type { ScannerTarget } from "../../src/checks/content/daemon.ts";

/** The 68-byte EICAR anti-virus test file. */
export const EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/** SpamAssassin's GTUBE line: rule GTUBE, score 1000. */
export const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Starts a daemon on a free port, again on another one if the port was taken between choosing
 * it and the daemon binding it (another test process): the error then names the bind failure.
 */
async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await start(await freeTcpPort());
    } catch (err) {
      if (tries === 3 || !/Address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

/** Polls `ready` until it is true, the process exits, or the deadline passes. */
async function waitReady(name: string, proc: Subprocess, log: string, ready: () => Promise<boolean>, deadlineMs: number): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await ready().catch(() => false)) return performance.now() - start;
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}:\n${tail(log)}`);
    if (performance.now() - start > deadlineMs) {
      proc.kill();
      throw new Error(`${name} did not answer PING within ${deadlineMs} ms:\n${tail(log)}`);
    }
    await Bun.sleep(50);
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-30).join("\n");
  } catch {
    return "(no log)";
  }
}

abstract class Daemon {
  constructor(
    protected readonly proc: Subprocess,
    readonly dir: string,
    readonly port: number,
    readonly socketPath: string,
    /** How long it took from spawn to the first PONG, in ms. */
    readonly startMs: number,
  ) {}

  get tcp(): ScannerTarget {
    return { host: "127.0.0.1", port: this.port };
  }

  get unix(): ScannerTarget {
    return { path: this.socketPath };
  }

  async stop(): Promise<void> {
    this.proc.kill();
    const killer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    await this.proc.exited;
    clearTimeout(killer);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * spamd in the foreground on 127.0.0.1 and a unix socket: Debian's rules from
 * /usr/share/spamassassin, its plugin list (*.pre) from /etc/spamassassin, and a local.cf of
 * ours that turns Bayes off (the unprivileged child has no home to keep a database in).
 */
export class SpamdServer extends Daemon {
  static start(): Promise<SpamdServer> {
    return onFreePort((port) => SpamdServer.startOn(port));
  }

  private static async startOn(port: number): Promise<SpamdServer> {
    const dir = mkdtempSync(join(tmpdir(), "mailraven-spamd-"));
    // spamd drops to --username before it reads its configuration: that user must see it.
    chmodSync(dir, 0o755);
    const site = join(dir, "site");
    mkdirSync(site);
    for (const f of readdirSync("/etc/spamassassin")) if (f.endsWith(".pre")) copyFileSync(join("/etc/spamassassin", f), join(site, f));
    writeFileSync(join(site, "local.cf"), "use_bayes 0\nbayes_auto_learn 0\n");
    const socketPath = join(dir, "spamd.sock");
    const log = join(dir, "spamd.log");
    const args = [
      "/usr/sbin/spamd",
      `--listen=127.0.0.1:${port}`,
      `--socketpath=${socketPath}`,
      "--allowed-ips=127.0.0.1",
      "--nouser-config",
      "--local", // no DNS or network tests: this machine has no network
      "--configpath=/usr/share/spamassassin",
      `--siteconfigpath=${site}`,
      "--syslog=stderr",
      "--max-children=2",
      "--min-children=1",
    ];
    // spamd refuses to run its children as root; it switches to this user after binding.
    if (process.getuid?.() === 0) args.push("--username=nobody");
    const proc = Bun.spawn(args, { cwd: dir, stdin: "ignore", stdout: Bun.file(join(dir, "spamd.out")), stderr: Bun.file(log) });
    // Both ways in must answer: the tests use the TCP port and the unix socket.
    const startMs = await waitReady("spamd", proc, log, async () => (await spamdPing({ host: "127.0.0.1", port }, 1000)) && (await spamdPing({ path: socketPath }, 1000)), 60_000).catch((err) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
    return new SpamdServer(proc, dir, port, socketPath, startMs);
  }
}

/**
 * clamd in the foreground on 127.0.0.1 and a unix socket, with a database of one signature:
 * an .ndb body signature for the EICAR string, so it is found in a decoded attachment as well
 * as in plain text. clamd starts with no official (main/daily) database at all.
 */
export class ClamdServer extends Daemon {
  static readonly signature = "Eicar-Test-Signature";

  static start(opts: { streamMaxLength: string }): Promise<ClamdServer> {
    return onFreePort((port) => ClamdServer.startOn(port, opts));
  }

  private static async startOn(port: number, opts: { streamMaxLength: string }): Promise<ClamdServer> {
    const dir = mkdtempSync(join(tmpdir(), "mailraven-clamd-"));
    const db = join(dir, "db");
    mkdirSync(db);
    writeFileSync(join(db, "mailraven-test.ndb"), `${ClamdServer.signature}:0:*:${Buffer.from(EICAR, "latin1").toString("hex")}\n`);
    const socketPath = join(dir, "clamd.sock");
    const log = join(dir, "clamd.log");
    const conf = join(dir, "clamd.conf");
    writeFileSync(
      conf,
      [
        "Foreground yes",
        `TCPSocket ${port}`,
        "TCPAddr 127.0.0.1",
        `LocalSocket ${socketPath}`,
        `DatabaseDirectory ${db}`,
        `LogFile ${log}`,
        "LogVerbose yes",
        `StreamMaxLength ${opts.streamMaxLength}`,
        "",
      ].join("\n"),
    );
    const proc = Bun.spawn(["/usr/sbin/clamd", "--config-file", conf], { cwd: dir, stdin: "ignore", stdout: Bun.file(join(dir, "clamd.out")), stderr: Bun.file(join(dir, "clamd.err")) });
    const startMs = await waitReady("clamd", proc, log, async () => (await clamdPing({ host: "127.0.0.1", port }, 1000)) && (await clamdPing({ path: socketPath }, 1000)), 60_000).catch((err) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
    return new ClamdServer(proc, dir, port, socketPath, startMs);
  }
}

/** Accepts connections, reads nothing and never answers: a daemon that has hung. */
export class SilentServer {
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server, readonly port: number) {
    server.on("connection", (s) => {
      s.pause();
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      s.on("error", () => {});
    });
  }

  /** Connections accepted and still open. */
  get open(): number {
    return this.sockets.size;
  }

  static async start(): Promise<SilentServer> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return new SilentServer(server, (server.address() as { port: number }).port);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A ContentContext around `message`, streamed like the relay's in-memory bodies (one chunk). */
export function contentContext(message: string | Uint8Array, over: Partial<ContentContext> = {}): ContentContext {
  const bytes = typeof message === "string" ? Buffer.from(message, "latin1") : Buffer.from(message);
  return {
    client: { ip: "127.0.0.1", port: 40000, hostname: "localhost", helo: "client.test", secure: false, trusted: false, user: null },
    sender: "alice@origin.test",
    recipients: [],
    localDomains: [],
    message: () => Readable.from([bytes]),
    size: bytes.length,
    head: null,
    ...over,
  };
}

/** A plain, ordinary message with the headers a real client sends. */
export function plainMessage(body: string, subject = "Lunch tomorrow?"): string {
  return [
    "From: Alice <alice@origin.test>",
    "To: Bob <bob@dest.test>",
    `Subject: ${subject}`,
    "Date: Fri, 21 Nov 2025 10:00:00 +0000",
    "Message-ID: <20251121100000.1234@origin.test>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    body,
    "",
  ].join("\r\n");
}

/** A multipart message with `attachment` as a base64 file part. */
export function withAttachment(text: string, name: string, attachment: Uint8Array): string {
  const b64 = (Buffer.from(attachment).toString("base64").match(/.{1,76}/g) ?? []).join("\r\n");
  return [
    "From: Alice <alice@origin.test>",
    "To: Bob <bob@dest.test>",
    "Subject: the file",
    "Date: Fri, 21 Nov 2025 10:00:00 +0000",
    "Message-ID: <20251121100000.5678@origin.test>",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="b1"',
    "",
    "--b1",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    text,
    "--b1",
    `Content-Type: application/octet-stream; name="${name}"`,
    `Content-Disposition: attachment; filename="${name}"`,
    "Content-Transfer-Encoding: base64",
    "",
    b64,
    "--b1--",
    "",
  ].join("\r\n");
}
