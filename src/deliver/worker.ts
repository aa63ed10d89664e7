// The delivery worker: picks due recipients from the queue, groups them by message and next
// hop, sends each group over that hop's pool, and records per-recipient outcomes: delivered,
// deferred on the retry schedule, or failed with a bounce to the sender. A message leaves the
// queue only after every recipient got a final answer (at-least-once delivery). Mail for an
// mx:// route goes to the recipient domain's MX hosts, one pool per domain (connect.ts).

import { routeFor } from "../checks/relay-policy.ts";
import type { Config, Route } from "../config/types.ts";
import { Resolver } from "../dns/resolver.ts";
import type { Logger } from "../log.ts";
import { parseMailbox } from "../smtp/address.ts";
import { nextAttemptAt } from "../queue/backoff.ts";
import { reportFor } from "../queue/bounce.ts";
import { notifies, type FailedRecipient, type ReportedRecipient } from "../queue/dsn.ts";
import type { DueRecipient, NewMessage, RecipientOutcome, StoredBody } from "../queue/store.ts";
import { openMx, openRoute } from "./connect.ts";
import { sendStored } from "./outbound-message.ts";
import { MtaStsPolicies, type StsStore } from "./mta-sts.ts";
import { selfMatcher } from "./mx.ts";
import { RoutePool } from "./pool.ts";
import { DeliveryFailure, type FailureResult, type RecipientResult } from "./result.ts";
import { HopOpenError, type ClientOptions, type HopConnection, type Peer } from "./smtp-client.ts";

interface Job {
  readonly messageId: string;
  readonly route: Route;
  readonly recipients: DueRecipient[];
}

const WAKE_COALESCE_MS = 5;
const TICK_FLOOR_MS = 1000;
/** Below this many waiting jobs, newly queued mail is fetched at once. */
const LOW_WATERMARK = 200;
/** Jobs held in memory waiting for a free connection; past this the queue stays on disk. */
const MAX_WAITING = 2000;

/**
 * What delivery needs of the queue: reads, and one write (the outcomes of an attempt with the
 * reports they produce). The queue store itself, or, on the delivery thread, a connection of
 * its own for the reads and the SMTP thread's group commit for the write (deliver/thread.ts).
 */
export interface DeliveryQueue {
  dueAfter(afterMessageId: string, now: number, limit: number): DueRecipient[];
  due(now: number, limit: number): DueRecipient[];
  nextDueAt(): number | null;
  body(messageId: string): StoredBody;
  newId(now: number): string;
  record(outcomes: readonly RecipientOutcome[], bounces: readonly NewMessage[], messageIds: readonly string[]): Promise<unknown>;
}

/** The counters delivery keeps (metrics.ts; on the delivery thread, deltas sent to its registry). */
export interface DeliveryMetrics {
  readonly deliveryAttempts: { inc(labels: { route: string; outcome: "delivered" | "deferred" | "failed" }): void };
  readonly deliveriesTls: { inc(n: number): void };
  readonly deliverySeconds: { observe(seconds: number): void };
  readonly deliveryNoRoute: { inc(n: number): void };
  readonly bouncesQueued: { inc(): void };
}

export interface WorkerDeps {
  /** The configuration in force now (it changes on reload). */
  readonly config: () => Config;
  readonly metrics: DeliveryMetrics;
  readonly store: DeliveryQueue;
  readonly log: Logger;
  readonly now?: () => number;
  /** Called just before the queue is read for new mail: mail committed before this call is found by that read. */
  readonly looking?: () => void;
  /** Where MTA-STS policies outlive a restart (the policy state); none: memory only. */
  readonly stsStore?: StsStore;
}

export class DeliveryWorker {
  private readonly pools = new Map<string, RoutePool>();
  /** MTA-STS policies of destination domains, kept until they expire (RFC 8461 3.3). */
  private readonly sts: MtaStsPolicies;
  private readonly waiting = new Map<string, Job[]>();
  private readonly inFlight = new Set<number>();
  private readonly running = new Set<Promise<void>>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Infinity;
  private wakePending = false;
  /** Newest queue id taken so far: new mail is found past it without rereading the rest. */
  private cursor = "";
  /** Mail was queued while enough work was in hand; look for it once the backlog runs low. */
  private newMailWaiting = false;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly deps: WorkerDeps) {
    this.now = deps.now ?? Date.now;
    this.sts = new MtaStsPolicies(undefined, deps.stsStore ?? null);
  }

  start(): void {
    this.schedule(0);
  }

  /**
   * Something was queued: look for it soon, coalescing a burst of wake-ups into one query.
   * `everything`: older mail became due too (an admin retry or flush), so do a full look now.
   */
  wake(everything = false): void {
    if (this.stopped) return;
    if (everything) return this.schedule(0);
    if (this.waitingCount() >= LOW_WATERMARK) {
      this.newMailWaiting = true;
      return;
    }
    if (this.wakePending) return;
    this.wakePending = true;
    setTimeout(() => {
      this.wakePending = false;
      this.newMailWaiting = false;
      this.deps.looking?.();
      const room = MAX_WAITING - this.waitingCount();
      const taken = room > 0 ? this.take(this.deps.store.dueAfter(this.cursor, this.now(), room)) : 0;
      if (taken) this.deps.log.debug("queue looked at", { for: "new mail", recipients: taken });
      // Queue ids are given when DATA starts, so a message can commit after a newer one was
      // taken and fall behind the cursor: a full look within a second picks such stragglers up.
      this.armFor(this.now() + TICK_FLOOR_MS);
    }, WAKE_COALESCE_MS);
  }

  /** Stops taking work and waits for deliveries in progress to be recorded. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.waiting.clear();
    while (this.running.size) await Promise.allSettled([...this.running]);
    for (const pool of this.pools.values()) pool.close();
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(delayMs, 60_000));
    this.timerAt = this.now() + delay;
    this.timer = setTimeout(() => this.tick(), delay);
  }

  /** Makes sure a full look happens by `at` (a retry just scheduled may be due before the timer). */
  private armFor(at: number): void {
    if (at < this.timerAt) this.schedule(at - this.now());
  }

  /** The full look, by due time: retries coming due, and anything a quick look missed. */
  private tick(): void {
    if (this.stopped) return;
    const now = this.now();
    const { store } = this.deps;
    this.deps.looking?.();
    // Fetch past the recipients already in hand so new due work is always found.
    const room = MAX_WAITING - this.waitingCount();
    const taken = this.take(room <= 0 ? [] : store.due(now, this.inFlight.size + room));
    if (taken) this.deps.log.debug("queue looked at", { for: "due mail", recipients: taken });
    // Recipients in flight stay due in the table, so the next full look is never sooner than the floor.
    const next = store.nextDueAt();
    this.schedule(next === null ? 60_000 : Math.max(next - now, TICK_FLOOR_MS));
  }

  /** Queues due recipients not already in hand as jobs, by message and route, and starts what fits; returns how many were new. */
  private take(rows: readonly DueRecipient[]): number {
    if (this.stopped) return 0;
    const config = this.deps.config();
    const due = rows.filter((r) => !this.inFlight.has(r.rowId));
    for (const r of rows) if (r.messageId > this.cursor) this.cursor = r.messageId;
    const jobs = new Map<string, Job>();
    const noRoute: DueRecipient[] = [];
    for (const r of due) {
      const mailbox = parseMailbox(r.address);
      const route = mailbox && routeFor(config.relay, mailbox, config.outbound.mxDelivery);
      if (!route) {
        noRoute.push(r);
        continue;
      }
      this.inFlight.add(r.rowId);
      const key = `${r.messageId}\n${route.uri}`;
      const job = jobs.get(key) ?? { messageId: r.messageId, route, recipients: [] };
      job.recipients.push(r);
      jobs.set(key, job);
    }
    for (const job of jobs.values()) {
      const list = this.waiting.get(job.route.uri) ?? [];
      list.push(job);
      this.waiting.set(job.route.uri, list);
    }
    if (noRoute.length) this.track(this.failNoRoute(noRoute));
    this.dropEmptyPools();
    this.dispatch();
    return due.length;
  }

  private waitingCount(): number {
    let n = 0;
    for (const jobs of this.waiting.values()) n += jobs.length;
    return n;
  }

  private dispatch(): void {
    for (const [uri, jobs] of this.waiting) {
      const pool = this.pool(jobs[0]!.route);
      while (jobs.length && pool.hasCapacity) this.track(this.deliver(pool, jobs.shift()!));
      if (!jobs.length) this.waiting.delete(uri);
    }
    if (this.newMailWaiting && this.waitingCount() < LOW_WATERMARK) this.wake();
  }

  private track(p: Promise<void>): void {
    this.running.add(p);
    p.finally(() => {
      this.running.delete(p);
      if (!this.stopped) this.dispatch();
    });
  }

  private pool(route: Route): RoutePool {
    let pool = this.pools.get(route.uri);
    if (!pool) {
      const d = this.deps.config().delivery;
      const open = route.protocol === "mx" ? () => this.openMx(route.host) : () => openRoute(route, this.clientOptions(), this.deps.log);
      pool = new RoutePool(open, d.concurrencyPerRoute, d.idleConnectionTtlMs);
      this.pools.set(route.uri, pool);
    }
    return pool;
  }

  /** MX delivery opens one pool per recipient domain: drop those with nothing left in them. */
  private dropEmptyPools(): void {
    for (const [uri, pool] of this.pools) {
      if (pool.empty && !this.waiting.has(uri)) {
        pool.close();
        this.pools.delete(uri);
      }
    }
  }

  private clientOptions(): ClientOptions {
    const config = this.deps.config();
    const d = config.delivery;
    return { heloName: config.hostname, connectTimeoutMs: d.connectTimeoutMs, timeoutMs: d.timeoutMs };
  }

  /** Settings are read when a session is opened, so a reload applies to the next one. */
  private openMx(domain: string): Promise<HopConnection> {
    const config = this.deps.config();
    return openMx(domain, {
      client: this.clientOptions(),
      resolver: new Resolver({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs, attempts: config.dns.attempts }),
      outbound: config.outbound,
      isSelf: selfMatcher(config.smtp.listen),
      sts: config.outbound.mtaSts ? this.sts : null,
      log: this.deps.log,
    });
  }

  private async deliver(pool: RoutePool, job: Job): Promise<void> {
    const { store, log } = this.deps;
    const started = this.now();
    let results: RecipientResult[];
    const used: Hop = {};
    try {
      const stored = store.body(job.messageId);
      results = await pool.withConnection((conn) => {
        used.peer = conn.peer;
        used.dsn = conn.extensions.dsn;
        return sendStored(conn, stored, job.recipients, job.route.uri);
      });
    } catch (err) {
      // A configured route's failures are all temporary, a 5xx greeting included: we were told
      // to use that next hop, so it is retried until it behaves (or the schedule runs out).
      const failure: FailureResult =
        err instanceof DeliveryFailure
          ? err.result
          : { kind: "temporary", response: err instanceof HopOpenError ? err.message : `4.4.1 Connection to ${job.route.uri} failed: ${(err as Error).message}` };
      results = job.recipients.map(() => failure);
    }
    // The connection is free again: hand it the next job now rather than after this
    // outcome's fsync, so a route's sessions never sit idle waiting for the disk.
    this.dispatch();
    try {
      await this.record(job, results, used);
    } catch (err) {
      log.error("recording delivery outcome failed", { queue_id: job.messageId, error: err });
    } finally {
      for (const r of job.recipients) this.inFlight.delete(r.rowId);
    }
    if (used.peer?.tls) this.deps.metrics.deliveriesTls.inc(results.filter((r) => r.kind === "ok").length);
    log.info("delivery attempt", {
      queue_id: job.messageId,
      route: job.route.uri,
      mx: used.peer?.mx ?? undefined,
      tls: used.peer ? (used.peer.tls ?? "none") : undefined,
      rcpt_count: job.recipients.length,
      delivered: results.filter((r) => r.kind === "ok").length,
      deferred: results.filter((r) => r.kind === "temporary").length,
      failed: results.filter((r) => r.kind === "permanent").length,
      response: results[0]?.response,
      duration_ms: this.now() - started,
    });
  }

  /**
   * Every queued recipient had a route when it was accepted, so none now means a reload took
   * it away, most likely by mistake (a typo in relay.domains): the mail waits on the retry
   * schedule for the route to come back instead of bouncing at once.
   */
  private async failNoRoute(recipients: DueRecipient[]): Promise<void> {
    for (const r of recipients) this.inFlight.add(r.rowId);
    const byMessage = Map.groupBy(recipients, (r) => r.messageId);
    try {
      for (const [messageId, list] of byMessage) {
        const route = { protocol: "smtp", host: "", port: 0, uri: "none" } as const;
        this.deps.metrics.deliveryNoRoute.inc(list.length);
        this.deps.log.error("no route for queued mail (removed from the configuration?): deferred, not bounced", { queue_id: messageId, rcpt: list.map((r) => r.address), attempts: list[0]!.attempts + 1 });
        await this.record({ messageId, route, recipients: list }, list.map(() => ({ kind: "temporary", response: "4.4.4 No route to the recipient's domain in the configuration" })));
      }
    } finally {
      for (const r of recipients) this.inFlight.delete(r.rowId);
    }
  }

  private async record(job: Job, results: RecipientResult[], hop: Hop = {}): Promise<void> {
    const { store, log, metrics } = this.deps;
    const config = this.deps.config();
    const now = this.now();
    const outcomes: RecipientOutcome[] = [];
    const failed: FailedRecipient[] = [];
    const delayed: ReportedRecipient[] = [];
    const succeeded: ReportedRecipient[] = [];
    const warnAfter = config.queue.delayWarningMs;
    job.recipients.forEach((r, i) => {
      const res = results[i] ?? { kind: "temporary", response: "4.3.0 no result" };
      if (res.kind === "ok") {
        metrics.deliveryAttempts.inc({ route: routeLabel(job.route), outcome: "delivered" });
        metrics.deliverySeconds.observe((now - r.receivedAt) / 1000);
        // RFC 3461 5.2.2: a next hop that offers DSN was given NOTIFY and reports from here on.
        if (!hop.dsn && notifies(r.notify, "delivered")) succeeded.push({ address: r.address, orcpt: r.orcpt, diagnostic: res.response, remote: true, remoteMta: (hop.peer?.mx ?? job.route.host).replace(/\[[^\]]*\]$/, "") });
        return outcomes.push({ kind: "delivered", rowId: r.rowId, response: res.response });
      }
      const retryAt = res.kind === "temporary" ? nextAttemptAt(config.queue.retryScheduleMs, r.attempts + 1, now) : null;
      metrics.deliveryAttempts.inc({ route: routeLabel(job.route), outcome: retryAt === null ? "failed" : "deferred" });
      if (retryAt !== null) {
        // One delay warning per recipient, once it has waited delay_warning (RFC 3464 Action: delayed).
        const warn = warnAfter > 0 && !r.delayWarned && now - r.receivedAt >= warnAfter && notifies(r.notify, "delayed");
        if (warn) delayed.push({ address: r.address, orcpt: r.orcpt, diagnostic: res.response, remote: /^\d{3}[ -]/.test(res.response) });
        return outcomes.push({ kind: "deferred", rowId: r.rowId, error: res.response, nextAttemptAt: retryAt, delayWarned: warn });
      }
      const diagnostic = res.kind === "temporary" ? `${res.response} (gave up after ${r.attempts + 1} attempts)` : res.response;
      outcomes.push({ kind: "failed", rowId: r.rowId, error: diagnostic });
      if (notifies(r.notify, "failed")) failed.push({ address: r.address, orcpt: r.orcpt, diagnostic, remote: /^\d{3}[ -]/.test(res.response) });
      log.warn("recipient failed", { queue_id: job.messageId, rcpt: r.address, attempts: r.attempts + 1, error: diagnostic, notify: r.notify?.join(",") });
    });
    const first = job.recipients[0]!;
    const about = { messageId: job.messageId, sender: first.sender, receivedAt: first.receivedAt };
    const willRetryUntil = first.receivedAt + config.queue.retryScheduleMs.reduce((a, b) => a + b, 0);
    const wanted = (
      [
        ["failed", failed],
        ["delayed", delayed],
        [job.route.protocol === "lmtp" ? "delivered" : "relayed", succeeded],
      ] as const
    ).filter(([, recipients]) => recipients.length > 0);
    // Most attempts report nothing: no promise, no read of the stored message.
    const made = wanted.length
      ? await Promise.all(wanted.map(async ([action, recipients]) => ({ action, count: recipients.length, report: await reportFor(store, config, log, { ...about, action, recipients, willRetryUntil }, now) })))
      : [];
    const reports = made.flatMap((m) => (m.report ? [m.report] : []));
    await store.record(outcomes, reports, [job.messageId]);
    const retries = outcomes.flatMap((o) => (o.kind === "deferred" ? [o.nextAttemptAt] : []));
    if (retries.length) this.armFor(Math.min(...retries));
    for (const { action, count, report } of made) {
      if (!report) continue;
      if (action === "failed") metrics.bouncesQueued.inc();
      log.info(action === "failed" ? "bounce queued" : "report queued", { queue_id: report.id, original_queue_id: job.messageId, action, rcpt_count: count });
    }
    if (reports.length) this.wake();
  }
}

/** What a delivery attempt learnt about the next hop, for the log and for reports. */
interface Hop {
  peer?: Peer;
  /** The hop offered DSN (RFC 3461), so NOTIFY went on to it. */
  dsn?: boolean;
}

/** One metrics label for all MX delivery: a label per destination domain would grow without bound. */
const routeLabel = (route: Route) => (route.protocol === "mx" ? "mx" : route.uri);
