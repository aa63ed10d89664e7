// /admin/queue: look at the queue and act on it without stopping mail.

import { Hono } from "hono";
import { isQueueId } from "../queue/id.ts";
import type { MessageSummary, QueueStore, RecipientDetail } from "../queue/store.ts";
import { parseDuration } from "../units.ts";
import { ApiError } from "./errors.ts";

export interface QueueRouteDeps {
  readonly store: QueueStore;
  /** Asks the delivery worker to look for due work now. */
  readonly wake: () => void;
  /** Deletes a message, bouncing it to its sender or not. */
  readonly remove: (id: string, bounce: boolean) => Promise<boolean>;
}

const iso = (ms: number) => new Date(ms).toISOString();

export const summaryJson = (m: MessageSummary) => ({
  id: m.id,
  sender: m.sender,
  size: m.size,
  received_at: iso(m.receivedAt),
  client_ip: m.clientIp,
  recipients: m.recipients,
  deferred_recipients: m.deferred,
  state: m.deferred > 0 ? "deferred" : "queued",
  next_attempt_at: iso(m.nextAttemptAt),
  last_error: m.lastError,
});

const recipientJson = (r: RecipientDetail) => ({
  address: r.address,
  route: r.route,
  attempts: r.attempts,
  next_attempt_at: iso(r.nextAttemptAt),
  last_error: r.lastError,
});

function queueId(raw: string): string {
  if (!isQueueId(raw)) throw new ApiError(400, "bad_queue_id", `"${raw.slice(0, 40)}" is not a queue id (16 characters such as 1M7YJCRB853PTZ5P)`);
  return raw;
}

export function queueRoutes(deps: QueueRouteDeps) {
  const app = new Hono();

  app.get("/", (c) => {
    const q = c.req.query();
    const state = q.state;
    if (state !== undefined && state !== "queued" && state !== "deferred") throw new ApiError(400, "bad_parameter", "state must be queued or deferred");
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ApiError(400, "bad_parameter", "limit must be an integer from 1 to 1000");
    let receivedBefore: number | undefined;
    if (q.older_than !== undefined) {
      const age = parseDuration(q.older_than);
      if (age === undefined) throw new ApiError(400, "bad_parameter", 'older_than must be a duration such as "30m" or "2h"');
      receivedBefore = Date.now() - age;
    }
    if (q.domain !== undefined && !/^[a-z0-9.-]{1,253}$/i.test(q.domain)) throw new ApiError(400, "bad_parameter", "domain must be a domain name such as example.org");
    const after = q.after === undefined ? undefined : queueId(q.after);
    const page = deps.store.list({ state, domain: q.domain, receivedBefore, after, limit });
    return c.json({ messages: page.map(summaryJson), next: page.length === limit ? page[page.length - 1]!.id : null });
  });

  app.post("/flush", async (c) => {
    const n = await deps.store.retryNow(null);
    deps.wake();
    return c.json({ recipients_rescheduled: n });
  });

  app.get("/:id", (c) => {
    const id = queueId(c.req.param("id"));
    const found = deps.store.message(id);
    if (!found) throw new ApiError(404, "not_found", notQueued(id));
    return c.json({ message: summaryJson(found.summary), recipients: found.recipients.map(recipientJson) });
  });

  app.post("/:id/retry", async (c) => {
    const id = queueId(c.req.param("id"));
    if (!deps.store.message(id)) throw new ApiError(404, "not_found", notQueued(id));
    const n = await deps.store.retryNow(id);
    deps.wake();
    return c.json({ id, recipients_rescheduled: n });
  });

  app.delete("/:id", async (c) => {
    const id = queueId(c.req.param("id"));
    const mode = c.req.query("mode");
    if (mode !== "bounce" && mode !== "silent") {
      throw new ApiError(400, "bad_parameter", "say how to delete: ?mode=bounce (the sender is told) or ?mode=silent");
    }
    if (!(await deps.remove(id, mode === "bounce"))) throw new ApiError(404, "not_found", notQueued(id));
    return c.json({ id, deleted: true, bounced: mode === "bounce" });
  });

  return app;
}

/** The id is echoed: queueId() let only a well-formed queue id through. */
function notQueued(id: string): string {
  return `no message ${id} in the queue`;
}
