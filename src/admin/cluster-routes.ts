// GET /admin/cluster: the nodes sharing this node's Redis, from their heartbeats, each with its
// own queue's size (queues are never shared: this is where mail is waiting, e.g. before a node
// is drained). A single node, or one whose Redis does not answer, lists itself alone.

import { Hono } from "hono";
import type { NodeInfo } from "../state/cluster-nodes.ts";

export interface ClusterView {
  readonly enabled: boolean;
  redisUp(): boolean;
  /** This node, as its heartbeat would say it now. */
  self(): NodeInfo;
  /** The live nodes; null when Redis does not answer. */
  list(): Promise<NodeInfo[] | null>;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function clusterRoutes(view: ClusterView, now: () => number = Date.now) {
  const app = new Hono();
  app.get("/", async (c) => {
    const self = view.self();
    const listed = view.enabled ? await view.list() : null;
    // Just started, or Redis away: this node is live whatever its heartbeat says.
    const nodes = listed ? [self, ...listed.filter((n) => n.name !== self.name)] : [self];
    const t = now();
    return c.json({
      enabled: view.enabled,
      node: self.name,
      redis: view.enabled ? (view.redisUp() && listed ? "up" : "down") : null,
      nodes: nodes.map((n) => ({
        name: n.name,
        self: n.name === self.name,
        version: n.version,
        started_at: iso(n.startedAt),
        last_seen: iso(n.seenAt),
        queue: { messages: n.queue.messages, recipients: n.queue.recipients, oldest_age_seconds: n.queue.oldest === null ? 0 : Math.max(0, Math.round((t - n.queue.oldest) / 1000)) },
      })),
    });
  });
  return app;
}
