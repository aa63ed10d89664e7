// The cluster's live nodes: each writes a heartbeat key (its name, version, start time and
// queue size) every cluster.heartbeat, living three heartbeats; a node that stopped or lost
// Redis drops out of the list when its key expires. Each node's queue stays its own; the
// list shows where mail is waiting (GET /admin/cluster, `mailraven cluster ls`).

import type { Logger } from "../log.ts";
import { SLOW_OP_MS, type RedisLink } from "./redis-link.ts";

export interface NodeQueue {
  readonly messages: number;
  readonly recipients: number;
  /** Unix ms of the oldest queued message; null when the queue is empty. */
  readonly oldest: number | null;
}

export interface NodeInfo {
  readonly name: string;
  readonly version: string;
  readonly startedAt: number;
  /** When this heartbeat was written (unix ms). */
  readonly seenAt: number;
  readonly queue: NodeQueue;
}

export class ClusterNodes {
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly startedAt = Date.now();
  private warned = false;

  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
    readonly name: string,
    private readonly version: string,
    private readonly heartbeatMs: number,
    private readonly queue: () => NodeQueue,
    private readonly log: Logger,
  ) {}

  /** This node as its heartbeat says it. */
  self(): NodeInfo {
    return { name: this.name, version: this.version, startedAt: this.startedAt, seenAt: Date.now(), queue: this.queue() };
  }

  start(): void {
    this.beat();
    this.timer = setInterval(() => this.beat(), this.heartbeatMs);
    this.timer.unref();
  }

  /** Live nodes, this one first; null when Redis does not answer. */
  async list(): Promise<NodeInfo[] | null> {
    const found = await this.link.call(
      null,
      async (c) => {
        const keys: string[] = [];
        let cursor = "0";
        // SCAN is bounded per call; a cluster has a handful of nodes, so a few rounds at most.
        for (let round = 0; round < 1000; round++) {
          const [next, batch] = (await c.send("SCAN", [cursor, "MATCH", `${this.prefix}node:*`, "COUNT", "500"])) as [string, string[]];
          keys.push(...batch);
          cursor = String(next);
          if (cursor === "0") break;
        }
        if (!keys.length) return [];
        const values = (await c.send("MGET", keys)) as (string | null)[];
        return values.flatMap((v) => {
          try {
            return v ? [JSON.parse(v) as NodeInfo] : [];
          } catch {
            return [];
          }
        });
      },
      () => null,
      SLOW_OP_MS,
    );
    if (!found) return null;
    return found.sort((a, b) => (a.name === this.name ? -1 : b.name === this.name ? 1 : a.name.localeCompare(b.name)));
  }

  /** Stopping: drop the heartbeat so the node leaves the list at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.link.call(null, (c) => c.send("DEL", [this.key()]), () => null);
  }

  private key(): string {
    return `${this.prefix}node:${this.name}`;
  }

  private beat(): void {
    const me = this.self();
    this.link.whenUp(async (c) => {
      const before = (await c.send("GET", [this.key()])) as string | null;
      const other = before ? (JSON.parse(before) as NodeInfo) : null;
      // Two nodes with one name would hide each other: say so, once.
      if (other && other.startedAt !== this.startedAt && other.seenAt > this.startedAt && !this.warned) {
        this.warned = true;
        this.log.warn("another node uses this cluster.node_name; give each node its own", { node_name: this.name, other_started_at: new Date(other.startedAt).toISOString() });
      }
      await c.send("SET", [this.key(), JSON.stringify(me), "PX", String(this.heartbeatMs * 3)]);
    });
  }
}
