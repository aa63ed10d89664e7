// The admin HTTP API (Hono): health and metrics without auth, everything under /admin/ behind
// the bearer token. Every error is JSON, never a stack trace.

import { Hono } from "hono";
import type { BackupRunner } from "../backup/runner.ts";
import { BackupBusy, BackupFailed } from "../backup/runner.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { bearerAuth } from "./auth.ts";
import { ApiError, errorBody } from "./errors.ts";
import { queueRoutes, type QueueRouteDeps } from "./queue-routes.ts";
import { policyRoutes } from "./policy-routes.ts";
import type { PolicyState } from "../state/types.ts";
import type { UserStore } from "../users/store.ts";
import { userRoutes } from "./user-routes.ts";
import { apiKeyRoutes } from "./apikey-routes.ts";
import { clusterRoutes, type ClusterView } from "./cluster-routes.ts";
import type { ApiKeyStore } from "../api/keys.ts";
import type { DiskSpace } from "../queue/disk-space.ts";

export interface AdminDeps extends QueueRouteDeps {
  /** This node's policy state, or the cluster's. */
  readonly policy: PolicyState;
  readonly users: UserStore | null;
  readonly apiKeys: ApiKeyStore | null;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly backups: BackupRunner;
  readonly token: () => string | null;
  readonly clientIp: (req: Request, env: unknown) => string;
  /** Readiness beyond the queue: e.g. the SMTP listeners are up. */
  readonly listenersUp: () => number;
  /** The state directory's free space (queue.min_free_space); absent: not checked. */
  readonly disk?: DiskSpace;
  /** The cluster this node is part of (or this node alone). */
  readonly cluster: ClusterView;
}

export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();

  app.get("/health", (c) => {
    const listeners = deps.listenersUp();
    // A real write (the database lock, and a synced file) rather than trust: a full disk still grants the lock.
    const queueWritable = deps.store.writable() && (deps.disk?.writable() ?? true);
    const lowSpace = deps.disk?.low() ?? false;
    const status = listeners === 0 ? "unavailable" : !queueWritable || lowSpace ? "degraded" : "ok";
    const disk = deps.disk ? { disk_free_bytes: deps.disk.freeBytes(), low_disk_space: lowSpace } : {};
    // Without Redis the node still takes mail, on its own state: reported, but never a reason
    // for a load balancer's health check to take every node out at once.
    const redis = deps.cluster.enabled ? { redis: deps.cluster.redisUp() ? "up" : "down", degraded: !deps.cluster.redisUp() } : {};
    return c.json({ status, queue_writable: queueWritable, ...disk, smtp_listeners: listeners, ...redis }, status === "ok" ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    c.header("Content-Type", deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });

  app.use("/admin/*", bearerAuth(deps));
  app.route("/admin/queue", queueRoutes(deps));
  const policy = policyRoutes(deps.policy);
  app.route("/admin/greylist", policy.greylist);
  app.route("/admin/blocklist", policy.blocklist);
  app.route("/admin/users", userRoutes(deps.users));
  app.route("/admin/apikeys", apiKeyRoutes(deps.apiKeys));
  app.route("/admin/cluster", clusterRoutes(deps.cluster));
  app.post("/admin/backup", async (c) => {
    try {
      const result = await deps.backups.run();
      deps.log.info("backup done", { path: result.path, bytes: result.bytes, messages: result.messages, duration_ms: result.duration_ms });
      return c.json(result);
    } catch (err) {
      if (err instanceof BackupBusy) throw new ApiError(409, "backup_running", err.message);
      // The runner logged the details; the answer names no path and has no stack trace.
      throw new ApiError(500, "backup_failed", err instanceof BackupFailed ? `backup failed: ${err.message}` : "backup failed; see the log");
    }
  });

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json(errorBody(err.code, err.message), err.status);
    deps.log.error("admin request failed", { path: c.req.path, error: err });
    return c.json(errorBody("internal", "internal error; see the log"), 500);
  });
  return app;
}
