// Prometheus metrics (prom-client on a registry of our own, never the global default).
// Names follow Prometheus conventions: mailraven_<what>_<unit>, counters end in _total.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

export type Metrics = ReturnType<typeof createMetrics>;

export interface QueueDepthSource {
  depthByState(): { state: string; recipients: number }[];
  depth(): { messages: number };
  oldestReceivedAt(): number | null;
}

/** The optional checks that let mail through when they cannot do their job (fail open). */
export type FailOpenCheck = "clamd" | "spamd" | "authentication" | "dkim_sign" | "dnsbl";

export function createMetrics() {
  const registry = new Registry();
  const r = [registry];
  return {
    registry,
    connectionsOpen: new Gauge({ name: "mailraven_smtp_connections_open", help: "SMTP sessions open now", registers: r }),
    connectionsTotal: new Counter({ name: "mailraven_smtp_connections_total", help: "SMTP connections accepted into a session", registers: r }),
    connectionsRejected: new Counter({ name: "mailraven_smtp_connections_rejected_total", help: "SMTP connections refused before a session", labelNames: ["reason"], registers: r }),
    messagesAccepted: new Counter({ name: "mailraven_messages_accepted_total", help: "Messages queued and acknowledged with 250", registers: r }),
    messagesAcceptedTls: new Counter({ name: "mailraven_messages_accepted_tls_total", help: "Messages acknowledged with 250 in a TLS session (STARTTLS or port 465)", registers: r }),
    messagesRejected: new Counter({ name: "mailraven_messages_rejected_total", help: "Recipients or messages refused with 5xx, by stage and reason", labelNames: ["stage", "reason"], registers: r }),
    messagesDeferred: new Counter({ name: "mailraven_messages_deferred_total", help: "Recipients or messages refused with 4xx, by stage and reason", labelNames: ["stage", "reason"], registers: r }),
    acceptSeconds: new Histogram({
      name: "mailraven_accept_duration_seconds",
      help: "End of DATA to the 250 reply (checks and the durable queue write)",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }),
    deliveryAttempts: new Counter({ name: "mailraven_delivery_attempts_total", help: "Recipient delivery attempts by route and outcome", labelNames: ["route", "outcome"], registers: r }),
    deliveriesTls: new Counter({ name: "mailraven_deliveries_tls_total", help: "Recipients delivered over a TLS connection to the next hop", registers: r }),
    deliverySeconds: new Histogram({
      name: "mailraven_delivery_latency_seconds",
      help: "Time from acceptance to final delivery of a recipient",
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600, 14400, 86400],
      registers: r,
    }),
    deliveryNoRoute: new Counter({ name: "mailraven_delivery_no_route_total", help: "Queued recipients deferred because their domain no longer has a route (a reload removed it)", registers: r }),
    bouncesQueued: new Counter({ name: "mailraven_bounces_total", help: "Delivery status notifications queued to senders", registers: r }),
    backups: new Counter({ name: "mailraven_backups_total", help: "Backups by outcome", labelNames: ["outcome"], registers: r }),
    backupLastDuration: new Gauge({ name: "mailraven_backup_last_duration_seconds", help: "Duration of the last successful backup", registers: r }),
    backupLastSuccess: new Gauge({ name: "mailraven_backup_last_success_timestamp_seconds", help: "Unix time of the last successful backup", registers: r }),
    dnsblResults: new Counter({ name: "mailraven_dnsbl_lookups_total", help: "DNS list answers by zone and result (listed, clean, error)", labelNames: ["zone", "result"], registers: r }),
    recipientProbes: new Counter({ name: "mailraven_recipient_probes_total", help: "Recipient verification probes to next hops by result (ok, unknown, tempfail; rate_limited and queue_full: not made)", labelNames: ["result"], registers: r }),
    authLimits: new Counter({ name: "mailraven_sender_auth_limits_total", help: "Messages whose sender authentication reached a budget (dkim_signatures, arc_sets, header_section, deadline)", labelNames: ["limit"], registers: r }),
    greylistDecisions: new Counter({ name: "mailraven_greylist_decisions_total", help: "Greylisting decisions (new, early, pass, allowlisted; capped and full: deferred without a write)", labelNames: ["decision"], registers: r }),
    authAttempts: new Counter({ name: "mailraven_smtp_auth_total", help: "SMTP AUTH attempts by result (ok, failed, blocked, busy, rate_limited)", labelNames: ["result"], registers: r }),
    earlyTalkers: new Counter({ name: "mailraven_smtp_early_talkers_total", help: "Clients that sent before the greeting and were refused", registers: r }),
    failOpen: new Counter({ name: "mailraven_check_fail_open_total", help: "Mail let through (or left unsigned) because an optional check failed: clamd, spamd, authentication, dkim_sign, dnsbl", labelNames: ["check"], registers: r }),
    syncViolations: new Counter({ name: "mailraven_smtp_sync_violations_total", help: "Sessions closed for RFC 2920 protocol synchronisation errors, by the command the input followed", labelNames: ["after"], registers: r }),
    sessionsCut: new Counter({ name: "mailraven_smtp_sessions_cut_total", help: "Sessions closed for a deadline or the error limit (command, rate, data, errors)", labelNames: ["reason"], registers: r }),
    stress: new Gauge({ name: "mailraven_smtp_stress", help: "1 while a listener is in stress mode", labelNames: ["listener"], registers: r }),
    lowDiskRefusals: new Counter({ name: "mailraven_smtp_insufficient_storage_total", help: "MAIL FROM or messages refused with 452 4.3.1 (free space below queue.min_free_space, or a write failed)", registers: r }),
    adminAuthFailures: new Counter({ name: "mailraven_admin_auth_failures_total", help: "Admin API requests refused for a missing or wrong token", registers: r }),
  };
}

/**
 * What every process exports: mailraven_build_info{version,bun} 1, and prom-client's process
 * and event-loop metrics (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds, nodejs_eventloop_lag_*), which work under Bun. Its heap-space gauges are
 * left out: JavaScriptCore has no V8 heap spaces, so they would all read 0.
 */
export function registerProcessMetrics(metrics: Metrics, version: string): void {
  new Gauge({ name: "mailraven_build_info", help: "The running version (always 1)", labelNames: ["version", "bun"], registers: [metrics.registry] }).set({ version, bun: Bun.version }, 1);
  collectDefaultMetrics({ register: metrics.registry });
  for (const name of ["nodejs_heap_space_size_total_bytes", "nodejs_heap_space_size_used_bytes", "nodejs_heap_space_size_available_bytes"]) metrics.registry.removeSingleMetric(name);
}

/** policy.db's size, read when Prometheus scrapes (greylisting stops writing new triplets at its ceiling). */
export function registerPolicyGauge(metrics: Metrics, source: { sizeBytes(): number }): void {
  new Gauge({
    name: "mailraven_policy_db_bytes",
    help: "Bytes in use in policy.db (greylist, allowlisted networks, blocklist, recipient verification)",
    registers: [metrics.registry],
    collect() {
      this.set(source.sizeBytes());
    },
  });
}

/**
 * Room on the state directory's file system and the reserve below which MAIL is deferred
 * (queue.min_free_space), read when Prometheus scrapes; the disk alerts compare the two.
 */
export function registerDiskGauges(metrics: Metrics, disk: { freeBytes(): number; reserveBytes(): number }): void {
  new Gauge({
    name: "mailraven_disk_free_bytes",
    help: "Bytes the relay may still write on the state directory's file system (statfs f_bavail)",
    registers: [metrics.registry],
    collect() {
      const free = disk.freeBytes();
      // An unreadable statfs is reported as unknown (no sample), never as a full or an infinite disk.
      if (Number.isFinite(free)) this.set(free);
      else this.reset();
    },
  });
  new Gauge({
    name: "mailraven_disk_reserve_bytes",
    help: "queue.min_free_space: below this much free space new mail is deferred with 452 4.3.1",
    registers: [metrics.registry],
    collect() {
      this.set(disk.reserveBytes());
    },
  });
}

/** Queue depth gauges, read from the store when Prometheus scrapes. */
export function registerQueueGauges(metrics: Metrics, source: QueueDepthSource): void {
  new Gauge({
    name: "mailraven_queue_recipients",
    help: "Recipients waiting in the queue, by state",
    labelNames: ["state"],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const { state, recipients } of source.depthByState()) this.set({ state }, recipients);
    },
  });
  new Gauge({
    name: "mailraven_queue_oldest_message_age_seconds",
    help: "Age of the oldest message in the queue (0 when it is empty): mail stuck behind a broken route",
    registers: [metrics.registry],
    collect() {
      const oldest = source.oldestReceivedAt();
      this.set(oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    },
  });
  new Gauge({
    name: "mailraven_queue_messages",
    help: "Messages in the queue",
    registers: [metrics.registry],
    collect() {
      this.set(source.depth().messages);
    },
  });
}
