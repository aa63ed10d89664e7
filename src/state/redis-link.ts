// The connection to a cluster's Redis (or Valkey), with Bun's built-in client, and what the
// node does when it does not answer. Every command runs within cluster.timeout; a timeout or
// a broken connection marks Redis down (logged once, counted), and from then on every caller
// gets its fallback at once, without waiting, until a probe (once a second) finds Redis
// answering again: no restart needed. Commands are never queued while disconnected.

import { RedisClient } from "bun";
import { readFileSync } from "node:fs";
import type { ClusterConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { Maybe } from "./types.ts";

/** How often a down link tries Redis again. */
const PROBE_INTERVAL_MS = 1000;
/** Work of several commands no SMTP reply waits for (admin requests, clean-up): its own limit. */
export const SLOW_OP_MS = 5000;

/** What the link reports, for /metrics and /health. */
export interface LinkEvents {
  /** A caller got its fallback because Redis was down or did not answer in time. */
  fallback(check: string): void;
  /** Redis went down (false) or came back (true). */
  state(up: boolean): void;
}

export type Cfg = Pick<ClusterConfig, "url" | "shownUrl" | "caFile" | "timeoutMs">;

export class RedisLink {
  private client: RedisClient | null = null;
  private isUp = false;
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private readonly upListeners: ((c: RedisClient) => void)[] = [];
  private lastError = "";

  constructor(
    private readonly cfg: Cfg,
    private readonly log: Logger,
    private readonly events: LinkEvents,
  ) {}

  get up(): boolean {
    return this.isUp;
  }

  /** Tries Redis once (bounded by a few timeouts); the node starts either way, with its own state while Redis is away. */
  async start(): Promise<void> {
    if (!(await this.probe())) {
      this.log.warn("redis unreachable at start; this node uses its own state until it answers", { redis: this.cfg.shownUrl, error: this.lastError });
      this.events.state(false);
      this.scheduleProbe();
    }
  }

  /** Called with the fresh client whenever Redis (again) answers: reload what was missed. */
  onUp(listener: (c: RedisClient) => void): void {
    this.upListeners.push(listener);
  }

  /**
   * Runs `op` against Redis within the timeout; `fallback` answers instead while Redis is down,
   * when it does not answer in time, or when the command fails.
   */
  call<T>(check: string | null, op: (c: RedisClient) => Promise<T>, fallback: () => Maybe<T>, timeoutMs = this.cfg.timeoutMs): Maybe<T> {
    const c = this.client;
    if (!this.isUp || !c) {
      if (check) this.events.fallback(check);
      return fallback();
    }
    return new Promise<T>((resolve) => {
      let settled = false;
      const give = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.failed(c, err);
        if (check) this.events.fallback(check);
        resolve(fallback());
      };
      const timer = setTimeout(() => give(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      op(c).then((v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      }, give);
    });
  }

  /** A write no reply waits for: `fallback` runs instead when Redis cannot take it. */
  write(check: string, op: (c: RedisClient) => Promise<unknown>, fallback: () => void): void {
    void this.call(check, op, fallback);
  }

  /** Housekeeping (reloads, clean-up, admin requests): runs only while Redis is up, and may take longer than one command. */
  whenUp(op: (c: RedisClient) => Promise<unknown>, timeoutMs = SLOW_OP_MS): void {
    if (this.isUp) void this.call(null, op, () => {}, timeoutMs);
  }

  close(): void {
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.client?.close();
    this.client = null;
    this.isUp = false;
  }

  private failed(c: RedisClient, err: unknown): void {
    const e = err as Error & { code?: string };
    // An error reply to one command (a bug of ours, or a read-only replica) is not an outage.
    if (e?.code === "ERR_REDIS_SERVER_ERROR" && !/^(LOADING|READONLY|MASTERDOWN|BUSY)/.test(e.message)) {
      this.log.error("redis refused a command; answered from this node's own state", { error: e.message });
      return;
    }
    if (c !== this.client || !this.isUp) return;
    this.isUp = false;
    this.client = null;
    c.close();
    this.log.warn("redis unreachable; this node uses its own state until it answers", { redis: this.cfg.shownUrl, error: e?.message ?? String(err) });
    this.events.state(false);
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.closed || this.probeTimer) return;
    this.probeTimer = setTimeout(async () => {
      this.probeTimer = null;
      if (this.closed) return;
      if (await this.probe()) {
        this.log.info("redis reachable again; shared state in use", { redis: this.cfg.shownUrl });
      } else this.scheduleProbe();
    }, PROBE_INTERVAL_MS);
    this.probeTimer.unref();
  }

  /** Connects a fresh client and PINGs it; on success it becomes the client in use. */
  private async probe(): Promise<boolean> {
    const c = new RedisClient(this.cfg.url, {
      // Connecting is not on any reply's path: allow it longer than one command.
      connectionTimeout: Math.max(1000, this.cfg.timeoutMs * 4),
      autoReconnect: false,
      enableOfflineQueue: false,
      ...(this.cfg.caFile ? { tls: { ca: readFileSync(this.cfg.caFile, "utf8") } } : {}),
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no answer to PING")), Math.max(1000, this.cfg.timeoutMs * 4));
      });
      await Promise.race([c.connect().then(() => c.send("PING", [])), late]);
    } catch (err) {
      this.lastError = (err as Error).message;
      c.close();
      return false;
    } finally {
      clearTimeout(timer);
    }
    if (this.closed) {
      c.close();
      return false;
    }
    c.onclose = (err) => this.failed(c, err ?? new Error("connection closed"));
    this.client = c;
    this.isUp = true;
    this.events.state(true);
    for (const l of this.upListeners) l(c);
    return true;
  }
}
