// A real redis-server for the tests (Debian's package, installed by scripts/test.sh): on a free
// loopback port, in a temp dir, nothing saved to disk; ready when it answers PING. It can be
// killed and started again on the same port (outage tests), or paused (a hung server).

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisClient, type Subprocess } from "bun";
import { freePort } from "./pebble.ts";

export class RedisServer {
  private proc: Subprocess | null = null;
  readonly url: string;
  /** With the password of --requirepass, if any: for the test's own client. */
  private readonly authedUrl: string;
  private client: RedisClient | null = null;

  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly args: readonly string[],
  ) {
    this.url = `redis://127.0.0.1:${port}`;
    const pw = args[args.indexOf("--requirepass") + 1];
    this.authedUrl = args.includes("--requirepass") && pw ? `redis://:${encodeURIComponent(pw)}@127.0.0.1:${port}` : this.url;
  }

  /** `args`: more redis-server options, e.g. ["--requirepass", "secret"]. */
  static async start(args: readonly string[] = []): Promise<RedisServer> {
    for (let tries = 1; ; tries++) {
      const r = new RedisServer(await freePort(), mkdtempSync(join(tmpdir(), "mailraven-redis-")), args);
      try {
        await r.launch();
        return r;
      } catch (err) {
        r.cleanup();
        // Another test process took the port between choosing and binding it: another port.
        if (tries === 3 || !/Address already in use/i.test((err as Error).message)) throw err;
      }
    }
  }

  /** The server's process id (the benchmark reads its CPU time). */
  get pid(): number | null {
    return this.proc?.pid ?? null;
  }

  /** A client for the test itself (to look at keys). */
  async redis(): Promise<RedisClient> {
    if (!this.client?.connected) {
      this.client = new RedisClient(this.authedUrl, { autoReconnect: false, connectionTimeout: 2000 });
      await this.client.connect();
    }
    return this.client;
  }

  async send(command: string, args: string[]): Promise<unknown> {
    return (await this.redis()).send(command, args);
  }

  /** SIGKILL: the connections drop at once, nothing is saved. */
  async kill(): Promise<void> {
    this.client?.close();
    this.client = null;
    this.proc?.kill("SIGKILL");
    await this.proc?.exited;
    this.proc = null;
  }

  /** Starts it again on the same port (empty: it saves nothing). */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  pause(): void {
    this.proc?.kill("SIGSTOP");
  }

  resume(): void {
    this.proc?.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    this.resume();
    await this.kill();
    this.cleanup();
  }

  private cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const log = join(this.dir, "redis.log");
    const proc = Bun.spawn(
      ["redis-server", "--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir, "--logfile", log, "--daemonize", "no", ...this.args],
      { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
    );
    this.proc = proc;
    const deadline = performance.now() + 15_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${this.logTail(log)}`);
      if (await this.pings()) return;
      if (performance.now() > deadline) throw new Error(`redis-server did not answer PING within 15 s: ${this.logTail(log)}`);
      await Bun.sleep(25);
    }
  }

  private async pings(): Promise<boolean> {
    const c = new RedisClient(this.authedUrl, { autoReconnect: false, connectionTimeout: 500, enableOfflineQueue: false });
    try {
      await c.connect();
      return (await c.send("PING", [])) === "PONG";
    } catch {
      return false;
    } finally {
      c.close();
    }
  }

  private logTail(path: string): string {
    try {
      return readFileSync(path, "utf8").split("\n").slice(-10).join("\n");
    } catch {
      return "(no log)";
    }
  }
}
