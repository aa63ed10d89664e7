// Runs the compiled binary (build/mailraven) with a generated config in a temp dir, the way
// an admin runs it, and exposes its JSON log lines to the test.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { Database } from "bun:sqlite";

export const BINARY = resolve(import.meta.dir, "../../build/mailraven");
/** The admin token every test relay is given (the minimum is 32 characters). */
export const ADMIN_TOKEN = "test-admin-token-0123456789abcdef0123456789";

export type LogLine = { level: string; msg: string } & Record<string, unknown>;

export function tempDir(prefix = "mailraven-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface RelayOptions {
  /** The config document; `state_dir` and `smtp.listen` default to the temp dir and 127.0.0.1:0. */
  readonly config: Record<string, unknown>;
  /** Reuse a state dir (restart after a crash). */
  readonly dir?: string;
  /** Added to the environment, e.g. NODE_EXTRA_CA_CERTS for a test CA. */
  readonly env?: Record<string, string>;
  /**
   * Start it as systemd would with stdout connected to journald: JOURNAL_STREAM names its
   * stdout (device:inode), so log lines carry a "<N>" priority and arrive as level "raw".
   */
  readonly journal?: boolean;
}

export class Relay {
  readonly logs: LogLine[] = [];
  port = 0;
  adminPort = 0;
  configPath = "";
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly exited: Promise<number>;
  stderr = "";

  private constructor(readonly proc: Subprocess<"ignore", "pipe", "pipe">, readonly dir: string) {
    this.exited = proc.exited;
    void this.pump();
    void new Response(proc.stderr).text().then((t) => (this.stderr = t));
  }

  static async start(opts: RelayOptions): Promise<Relay> {
    if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run "npm run build" first`);
    const dir = opts.dir ?? tempDir();
    const smtp = (opts.config.smtp ?? {}) as Record<string, unknown>;
    const admin = (opts.config.admin ?? {}) as Record<string, unknown>;
    const doc = {
      hostname: "relay.test",
      state_dir: join(dir, "state"),
      log_level: "debug",
      ...opts.config,
      smtp: { listen: ["127.0.0.1:0"], greeting_delay: "0s", ...smtp },
      admin: { listen: "127.0.0.1:0", token: ADMIN_TOKEN, ...admin },
    };
    const configPath = join(dir, "mailraven.yaml");
    writeFileSync(configPath, JSON.stringify(doc, null, 2)); // JSON is YAML
    const env = opts.env ? { ...process.env, ...opts.env } : undefined;
    const argv = opts.journal
      ? ["sh", "-c", 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1) exec "$0" serve --config "$1"', BINARY, configPath]
      : [BINARY, "serve", "--config", configPath];
    const proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe", ...(env ? { env } : {}) });
    const relay = new Relay(proc, dir);
    try {
      await Promise.race([
        relay.waitForLog((l) => journalLine(l).msg === "mailraven started", 15_000),
        relay.exited.then((code) => {
          throw new Error(`mailraven exited with ${code} before listening: ${relay.stderr}`);
        }),
      ]);
    } catch (err) {
      // A relay that never said it started is nobody's to stop: end it here, not leave it running.
      if (proc.exitCode === null) proc.kill("SIGKILL");
      throw err;
    }
    const field = (msg: string) => relay.logs.map(journalLine).find((l) => l.msg === msg);
    relay.port = Number(field("smtp listening")!.port);
    relay.adminPort = Number(field("admin listening")?.port ?? 0);
    relay.configPath = configPath;
    return relay;
  }

  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const found = this.logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { pred, resolve: (l: LogLine) => (clearTimeout(timer), resolve(l)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${this.logs.slice(-8).map((l) => JSON.stringify(l)).join("\n")}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** A copy of the config naming the admin port actually bound, for the CLI (which reads the config). */
  cliConfigPath(): string {
    const path = join(this.dir, "cli.yaml");
    const doc = JSON.parse(readFileSync(this.configPath, "utf8")) as Record<string, Record<string, unknown>>;
    doc.admin = { ...doc.admin, listen: `127.0.0.1:${this.adminPort}` };
    writeFileSync(path, JSON.stringify(doc, null, 2));
    return path;
  }

  /** Calls the admin API with the test token (or the given one). */
  admin(method: string, path: string, token: string | null = ADMIN_TOKEN): Promise<Response> {
    return fetch(`http://127.0.0.1:${this.adminPort}${path}`, { method, headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  }

  count(msg: string): number {
    return this.logs.filter((l) => l.msg === msg).length;
  }

  /** SIGTERM and wait; returns the exit code. */
  async stop(): Promise<number> {
    this.proc.kill("SIGTERM");
    return this.exited;
  }

  async kill9(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.exited;
  }

  cleanup(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async pump(): Promise<void> {
    let buf = "";
    const decoder = new TextDecoder();
    for await (const chunk of this.proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let parsed: LogLine;
        try {
          parsed = JSON.parse(line) as LogLine;
        } catch {
          parsed = { level: "raw", msg: line };
        }
        this.logs.push(parsed);
        this.waiters = this.waiters.filter((w) => (w.pred(parsed) ? (w.resolve(parsed), false) : true));
      }
    }
  }
}

/** A line logged to journald ("<6>{...}", level "raw") as the JSON it carries, with its priority; other lines as they are. */
export function journalLine(l: LogLine): LogLine & { priority?: number } {
  const m = l.level === "raw" ? /^<(\d)>(\{.*\})$/.exec(l.msg) : null;
  return m ? { ...(JSON.parse(m[2]!) as LogLine), priority: Number(m[1]) } : l;
}

/** What is in a relay's queue right now, read the way an admin would (the WAL allows a reader). */
export function queueCounts(dir: string): { messages: number; recipients: number } {
  const db = new Database(join(dir, "state", "queue.db"), { readonly: true });
  try {
    return db.query<{ messages: number; recipients: number }, []>("SELECT (SELECT COUNT(*) FROM messages) AS messages, (SELECT COUNT(*) FROM recipients) AS recipients").get()!;
  } finally {
    db.close();
  }
}

/** Polls `check` until it returns a truthy value; bounded by `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 10_000, what = "condition"): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(25);
  }
}
