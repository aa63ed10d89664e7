// `mailraven serve`: take the state lock, open the queue, start delivery, the SMTP listeners
// and the admin API; reload on SIGHUP; shut down in order on SIGTERM: stop accepting, let
// sessions finish, let deliveries record their outcome, close the queue.

import { createAdminApp } from "./admin/app.ts";
import { requestIp, startAdminServer, type AdminServer } from "./admin/server.ts";
import { BackupRunner } from "./backup/runner.ts";
import { newestBackupTime } from "./backup/last-success.ts";
import { registerCertificateExpiry } from "./tls-expiry.ts";
import type { Config } from "./config/types.ts";
import { DeliveryThread } from "./delivery-thread.ts";
import { Live } from "./live.ts";
import type { Logger } from "./log.ts";
import { createMetrics, registerDiskGauges, registerPolicyGauge, registerProcessMetrics, registerQueueGauges } from "./metrics.ts";
import { bounceFor } from "./queue/bounce.ts";
import { QueueStore } from "./queue/store.ts";
import { DiskSpace } from "./queue/disk-space.ts";
import { buildRuntime, withAcmeCertificate, type Runtime } from "./runtime.ts";
import { AcmeManager } from "./acme/manager.ts";
import { assertLibraryCompatible } from "./smtp/library-compat.ts";
import { startSmtpListener, type SmtpListener } from "./smtp/listener.ts";
import { acquireStateLock } from "./state-lock.ts";
import { pipelineServices } from "./checks/index.ts";
import { openPolicyState } from "./state/open.ts";
import { AuthGuard } from "./smtp/auth-guard.ts";
import { UserStore } from "./users/store.ts";
import { ApiKeyStore } from "./api/keys.ts";
import { createSendApi } from "./api/app.ts";

const DELIVERY_DRAIN_MS = 10_000;

export interface ServeOptions {
  /** Loads the configuration again (SIGHUP). */
  readonly reloadConfig: () => Config;
  /** The arguments that name the same configuration, for the backup process. */
  readonly configArgs: readonly string[];
}

export interface Running {
  readonly listeners: readonly SmtpListener[];
  readonly admin: AdminServer | null;
  reload(): void;
  shutdown(): Promise<void>;
}

export async function serve(config: Config, log: Logger, version: string, opts: ServeOptions): Promise<Running> {
  const startedAt = Date.now();
  assertLibraryCompatible();
  const lock = acquireStateLock(config.stateDir);
  const store = QueueStore.open(config.stateDir);
  const metrics = createMetrics();
  const queueSize = () => ({ ...store.depth(), oldest: store.oldestReceivedAt() });
  // policy.db, or the cluster's Redis in front of it (cluster.enabled).
  const { state: policy, policyDb, cluster } = await openPolicyState(config, log, metrics, version, queueSize);
  const users = config.submission ? UserStore.open(config.stateDir) : null;
  const authGuard = config.submission ? new AuthGuard(config.submission, policy, log) : null;
  const apiKeys = config.api ? ApiKeyStore.open(config.stateDir) : null;
  const disk = new DiskSpace(config.stateDir, () => runtime.get().config.queue.minFreeSpace);
  const services = pipelineServices(policy, users, metrics, log);
  const acme = new AcmeManager({ config: () => runtime.get().config.acme, install: (material) => installAcmeCertificate(runtime, material, log), log });
  // The cached ACME certificate is read before the runtime is built, so the listeners start with it.
  const acmeAtStart = acme.loadCached(config.acme);
  const runtime = new Live(buildRuntime(config, services, acmeAtStart));
  // Expired greylist triplets, allowlisted networks and blocks go away once an hour.
  const cleanup = setInterval(() => {
    try {
      policy.expire(Date.now());
    } catch (err) {
      log.error("policy clean-up failed", { error: err });
    }
  }, 3_600_000);
  cleanup.unref();
  registerQueueGauges(metrics, store);
  registerProcessMetrics(metrics, version);
  registerPolicyGauge(metrics, policyDb);
  registerDiskGauges(metrics, disk);
  registerCertificateExpiry(metrics, () => runtime.get());
  // The newest good backup survives restarts: its manifest says when it was made.
  const lastBackup = newestBackupTime(config.backup.dir);
  if (lastBackup !== null) metrics.backupLastSuccess.set(lastBackup);
  // Delivery runs on a thread of its own: the SMTP thread only commits its outcomes.
  const worker = new DeliveryThread({ config: () => runtime.get().config, store, log, metrics, stsStore: policy });
  runtime.onChange((next, previous) => {
    if (next.config !== previous.config) worker.setConfig(next.config);
  });
  const listeners: SmtpListener[] = [];
  let admin: AdminServer | null = null;
  let api: AdminServer | null = null;

  const remove = async (id: string, bounce: boolean): Promise<boolean> => {
    const found = store.message(id);
    if (!found) return false;
    const now = Date.now();
    const failed = found.recipients.map((r) => ({ address: r.address, diagnostic: "5.0.0 Deleted from the queue by the administrator", remote: false }));
    const b = bounce ? await bounceFor(store, runtime.get().config, log, { messageId: id, sender: found.summary.sender, receivedAt: found.summary.receivedAt, failed }, now) : null;
    const removed = await store.remove(id, b ? [b] : []);
    log.info("message deleted by the administrator", { queue_id: id, bounced: !!b });
    if (b) worker.wake();
    return removed;
  };

  try {
    const sessionDeps = { runtime, store, disk, log, metrics, users, authGuard, onQueued: () => worker.wake(), pregreet: policy };
    for (const address of config.smtp.listen) listeners.push(await startSmtpListener(address, sessionDeps, "mx"));
    for (const address of config.submission?.starttls ?? []) listeners.push(await startSmtpListener(address, sessionDeps, "submission"));
    for (const address of config.submission?.implicitTls ?? []) listeners.push(await startSmtpListener(address, sessionDeps, "smtps"));
    if (config.admin.listen) {
      const app = createAdminApp({
        store,
        disk,
        policy,
        users,
        apiKeys,
        log,
        metrics,
        wake: () => worker.wake(true),
        remove,
        backups: new BackupRunner(store, metrics, () => [...opts.configArgs], log),
        token: () => runtime.get().config.admin.token?.value ?? null,
        clientIp: requestIp,
        listenersUp: () => listeners.length,
        cluster: {
          enabled: cluster !== null,
          redisUp: () => cluster?.redisUp() ?? false,
          self: () => cluster?.nodes.self() ?? { name: config.hostname, version, startedAt, seenAt: Date.now(), queue: queueSize() },
          list: () => cluster?.nodes.list() ?? Promise.resolve(null),
        },
      });
      admin = startAdminServer(app, config.admin.listen, runtime.get().adminTls);
      log.info("admin listening", { address: config.admin.listen.host, port: admin.port, tls: !!config.admin.tls, token: !!config.admin.token });
    }
    if (config.api && apiKeys) {
      const sendApi = createSendApi({
        config: () => runtime.get().config,
        keys: apiKeys,
        store,
        rates: policy,
        sign: () => runtime.get().pipeline.signer,
        signs: (client, head) => runtime.get().pipeline.signs?.(client, head) ?? false,
        clientIp: requestIp,
        onQueued: () => worker.wake(),
        log,
        metrics,
      });
      api = startAdminServer(sendApi, config.api.listen, runtime.get().apiTls, "api.listen", config.smtp.maxMessageSize * 1.4 + 65_536);
      log.info("send api listening", { address: config.api.listen.host, port: api.port, tls: !!config.api.tls });
    }
  } catch (err) {
    acme.stop();
    await Promise.all(listeners.map((l) => l.close()));
    await api?.stop();
    await admin?.stop();
    apiKeys?.close();
    clearInterval(cleanup);
    await cluster?.nodes.stop();
    store.close();
    policy.close();
    users?.close();
    lock.release();
    throw err;
  }
  worker.start();
  // Start-up (module initialisation, config parsing, schema) leaves garbage behind; collect it
  // once now so the heap the sessions grow from is the live one.
  Bun.gc(true);
  log.info("mailraven started", { version, hostname: config.hostname, state_dir: config.stateDir, queue: store.depth() });
  if (config.acme && !acmeAtStart) {
    // Not waiting for the CA: mail keeps arriving on port 25 meanwhile. Nothing ever falls back
    // to smtp-server's built-in certificate, whose key is public.
    log.warn("acme: no certificate yet; until it arrives the MX port refuses STARTTLS (454) and the submission ports refuse connections", { hostnames: config.acme.hostnames });
  }
  acme.start();

  const reload = () => {
    let next;
    try {
      next = buildRuntime(opts.reloadConfig(), services, acme.material());
    } catch (err) {
      log.error("configuration reload refused; the running configuration stays in force", { error: (err as Error).message });
      return;
    }
    const before = runtime.get().config;
    const needRestart = (["stateDir", "logLevel"] as const).filter((k) => before[k] !== next.config[k]);
    if (JSON.stringify(before.smtp.listen) !== JSON.stringify(next.config.smtp.listen)) needRestart.push("smtp.listen" as never);
    if (JSON.stringify(before.admin.listen) !== JSON.stringify(next.config.admin.listen)) needRestart.push("admin.listen" as never);
    if (JSON.stringify(before.cluster) !== JSON.stringify(next.config.cluster)) needRestart.push("cluster" as never);
    runtime.set(next);
    log.info("configuration reloaded", needRestart.length ? { restart_needed_for: needRestart } : {});
    acme.reconsider();
  };

  let stopping: Promise<void> | null = null;
  const shutdown = () =>
    (stopping ??= (async () => {
      const started = Date.now();
      log.info("shutting down", { open_listeners: listeners.length });
      acme.stop();
      await Promise.all(listeners.map((l) => l.close()));
      // Deliveries in flight get a moment to record their outcome; any cut short stay
      // queued and are sent again after restart (at-least-once).
      await Promise.race([worker.stop(), Bun.sleep(DELIVERY_DRAIN_MS)]);
      await admin?.stop();
      await api?.stop();
      apiKeys?.close();
      clearInterval(cleanup);
      worker.terminate();
      await cluster?.nodes.stop();
      store.close();
      policy.close();
      users?.close();
      lock.release();
      log.info("stopped", { duration_ms: Date.now() - started });
    })());
  return { listeners, admin, reload, shutdown };
}

/** A new ACME certificate goes into the running listeners the way SIGHUP puts new files there: a new Runtime. */
function installAcmeCertificate(runtime: Live<Runtime>, material: { key: Buffer; cert: Buffer }, log: Logger): void {
  runtime.set(withAcmeCertificate(runtime.get(), material));
  log.info("acme certificate installed in the listeners");
}
