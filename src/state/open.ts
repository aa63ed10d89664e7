// Opens the policy state `serve` runs with: policy.db alone for a single node, or the
// cluster's Redis in front of it (cluster.enabled), with its metrics and heartbeat.

import { Counter, Gauge } from "prom-client";
import type { Config } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { PolicyStore } from "../policy/store.ts";
import { ClusterNodes, type NodeQueue } from "./cluster-nodes.ts";
import { LocalState } from "./local.ts";
import { RedisLink } from "./redis-link.ts";
import { RedisState } from "./redis.ts";
import { buckets } from "./token-bucket.ts";
import type { PolicyState } from "./types.ts";

export interface Cluster {
  readonly nodes: ClusterNodes;
  /** Whether Redis answers now (false: this node runs on its own state). */
  redisUp(): boolean;
}

export interface OpenedState {
  readonly state: PolicyState;
  /** policy.db (its size is a metric; the local state's store). */
  readonly policyDb: PolicyStore;
  /** Null for a single node. */
  readonly cluster: Cluster | null;
}

export async function openPolicyState(config: Config, log: Logger, metrics: Metrics, version: string, queue: () => NodeQueue): Promise<OpenedState> {
  const policyDb = PolicyStore.open(config.stateDir);
  let made: ReturnType<typeof buckets> | null = null;
  const local = new LocalState(policyDb, () => (made ??= buckets()));
  const c = config.cluster;
  if (!c) return { state: local, policyDb, cluster: null };
  const m = clusterMetrics(metrics);
  const link = new RedisLink(c, log, {
    fallback: (check) => m.fallbacks.inc({ check }),
    state: (up) => {
      m.degraded.set(up ? 0 : 1);
      if (!up) m.outages.inc();
    },
  });
  const state = new RedisState(c, link, local, log);
  await link.start();
  const nodes = new ClusterNodes(link, c.keyPrefix, c.nodeName, version, c.heartbeatMs, queue, log);
  nodes.start();
  log.info("cluster state in redis", { redis: c.shownUrl, node: c.nodeName, up: link.up, key_prefix: c.keyPrefix, timeout_ms: c.timeoutMs });
  return { state, policyDb, cluster: { nodes, redisUp: () => link.up } };
}

function clusterMetrics(metrics: Metrics) {
  const r = [metrics.registry];
  return {
    // The names contrib/prometheus/mailraven-rules.yml alerts on (MailravenRedisDegraded).
    degraded: new Gauge({ name: "mailraven_redis_degraded", help: "1 while the cluster's Redis does not answer and this node runs on its own state, 0 while it answers", registers: r }),
    outages: new Counter({ name: "mailraven_redis_outages_total", help: "Times the cluster's Redis stopped answering (a timeout or a lost connection)", registers: r }),
    fallbacks: new Counter({
      name: "mailraven_redis_fallbacks_total",
      help: "Policy state operations answered by this node's own state (or let through, fallback: open) because Redis was down or late, by check",
      labelNames: ["check"],
      registers: r,
    }),
  };
}
