// Keeps an ACME certificate for the listeners: reuses the cached one while it is good, orders
// a new one when there is none, when the names or the CA changed, or when it is due for
// renewal; installs each new certificate in the running listeners. A failed order is logged
// and retried with backoff; the certificate in use stays in use meanwhile, and the relay goes
// on serving whatever happens here.

import type { AcmeConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { TlsMaterial } from "../runtime.ts";
import { formatDuration } from "../units.ts";
import { orderCertificate, type OrderFn } from "./order.ts";
import { AcmeStore, parseCertificate, type Certificate } from "./store.ts";

/** Look again at least this often (renewal time, names, CA), whatever the certificate says. */
const CHECK_INTERVAL_MS = 3_600_000;
/** After a failed order: 1, 2, 4 ... minutes, then hourly. Let's Encrypt allows 5 failed validations per name per hour. */
const FIRST_RETRY_MS = 60_000;
const MAX_RETRY_MS = 3_600_000;
const DUE = "due for renewal";
const EXPIRED = "expired";

export interface Timer {
  cancel(): void;
}

export interface AcmeDeps {
  /** The acme section in force now (it changes on SIGHUP); null when ACME is off. */
  readonly config: () => AcmeConfig | null;
  /** Puts a new certificate into the listeners. */
  readonly install: (material: TlsMaterial) => void;
  readonly log: Logger;
  readonly order?: OrderFn;
  readonly now?: () => number;
  readonly setTimer?: (fn: () => void, ms: number) => Timer;
}

const defaultTimer = (fn: () => void, ms: number): Timer => {
  const t = setTimeout(fn, ms);
  t.unref();
  return { cancel: () => clearTimeout(t) };
};

/** When a certificate is due: renew_before ahead of expiry, but never in the first half of its life (no renewal loop when renew_before exceeds the lifetime). */
export function renewalTime(cert: Pick<Certificate, "notBefore" | "notAfter">, renewBeforeMs: number): number {
  return Math.max(cert.notAfter - renewBeforeMs, cert.notBefore + (cert.notAfter - cert.notBefore) / 2);
}

export function retryDelay(failures: number): number {
  return Math.min(FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1), MAX_RETRY_MS);
}

export class AcmeManager {
  private current: Certificate | null = null;
  private timer: Timer | null = null;
  private ordering = false;
  private failures = 0;
  private stopped = false;
  /** The cache is read once, at start or when a reload turns acme on. */
  private cacheRead = false;
  private readonly order: OrderFn;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => Timer;

  constructor(private readonly deps: AcmeDeps) {
    this.order = deps.order ?? orderCertificate;
    this.now = deps.now ?? Date.now;
    this.setTimer = deps.setTimer ?? defaultTimer;
  }

  /** The certificate in use (also after acme was switched off by a reload), for a rebuilt runtime. */
  material(): TlsMaterial | null {
    return this.current ? { key: this.current.key, cert: this.current.cert } : null;
  }

  /**
   * Reads the cached certificate, before the listeners start, so they start with it. One that
   * needs replacing (due, expired, other names or CA) is still returned: it is served until
   * its successor arrives, which start() orders at once.
   */
  loadCached(config: AcmeConfig | null): TlsMaterial | null {
    if (!config) return null;
    this.cacheRead = true;
    const loaded = new AcmeStore(config.dir).load();
    if (loaded instanceof Error) {
      this.deps.log.warn("acme: ignoring the cached certificate", { error: loaded.message });
      return null;
    }
    if (!loaded) return null;
    this.current = loaded;
    const reason = this.orderReason(config);
    this.deps.log.info("acme certificate loaded from cache", { ...describe(loaded), renew_at: new Date(renewalTime(loaded, config.renewBeforeMs)).toISOString(), ...(reason ? { order_needed: reason } : {}) });
    return this.material();
  }

  /** Starts the schedule: an order now if one is needed, else a check at renewal time (or in an hour). */
  start(): void {
    this.check();
  }

  /** The configuration was reloaded: look again now (new names, CA or renew_before). */
  reconsider(): void {
    if (!this.ordering) this.check();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
  }

  private schedule(ms: number): void {
    this.timer?.cancel();
    this.timer = this.setTimer(() => this.check(), Math.max(0, Math.min(ms, CHECK_INTERVAL_MS)));
  }

  private orderReason(config: AcmeConfig): string | null {
    const cert = this.current;
    if (!cert) return "no certificate";
    const missing = config.hostnames.filter((h) => !cert.names.includes(h));
    if (missing.length) return `hostnames not in the certificate: ${missing.join(", ")}`;
    if (cert.directory !== null && cert.directory !== config.directory) return `issued by another ACME directory (${cert.directory})`;
    if (this.now() >= renewalTime(cert, config.renewBeforeMs)) return cert.notAfter <= this.now() ? EXPIRED : DUE;
    return null;
  }

  private check(): void {
    if (this.stopped || this.ordering) return;
    const config = this.deps.config();
    if (!config) return this.schedule(CHECK_INTERVAL_MS);
    if (!this.current && !this.cacheRead) {
      // acme was turned on by a reload: a certificate cached by an earlier run may do.
      const cached = this.loadCached(config);
      if (cached) this.deps.install(cached);
    }
    const reason = this.orderReason(config);
    if (reason) return void this.run(config, reason);
    this.schedule(renewalTime(this.current!, config.renewBeforeMs) - this.now());
  }

  private async run(config: AcmeConfig, reason: string): Promise<void> {
    this.ordering = true;
    this.timer?.cancel();
    const started = this.now();
    const { log } = this.deps;
    log.info("acme order started", { reason, hostnames: config.hostnames, directory: config.directory, attempt: this.failures + 1 });
    const store = new AcmeStore(config.dir);
    let cert: Certificate;
    try {
      store.ensureDir();
      const issued = await this.order({ config, accountKey: store.accountKey(), log });
      cert = parseCertificate(issued.key, issued.chain, config.directory);
      const missing = config.hostnames.filter((h) => !cert.names.includes(h));
      if (missing.length) throw new Error(`the CA issued a certificate without ${missing.join(", ")}`);
    } catch (err) {
      this.ordering = false;
      if (this.stopped) return;
      const retryMs = retryDelay(++this.failures);
      log.error("acme order failed; the certificate in use stays in use", {
        error: errorText(err),
        attempt: this.failures,
        retry_in: formatDuration(retryMs),
        in_use: this.current ? describe(this.current) : null,
      });
      this.schedule(retryMs);
      return;
    }
    this.ordering = false;
    if (this.stopped) return;
    this.failures = 0;
    try {
      store.save(cert);
    } catch (err) {
      // Served all the same; the next start orders again.
      log.error("acme: cannot save the new certificate", { dir: config.dir, error: errorText(err) });
    }
    this.current = cert;
    log.info("acme certificate obtained", { ...describe(cert), duration_ms: this.now() - started, renew_at: new Date(renewalTime(cert, config.renewBeforeMs)).toISOString() });
    try {
      this.deps.install({ key: cert.key, cert: cert.cert });
    } catch (err) {
      log.error("acme: cannot install the new certificate in the listeners", { error: errorText(err) });
    }
    const next = this.orderReason(config);
    if (next === DUE || next === EXPIRED) {
      // Only a clock far off the CA's gets here; ordering again at once would loop.
      log.warn("acme: the new certificate is already due for renewal; is the system clock right?", { not_before: new Date(cert.notBefore).toISOString(), now: new Date(this.now()).toISOString() });
      this.schedule(CHECK_INTERVAL_MS);
    } else this.check();
  }
}

function describe(cert: Certificate): Record<string, unknown> {
  return { serial: cert.serial, names: cert.names, issuer: cert.issuer, not_after: new Date(cert.notAfter).toISOString() };
}

/** axios network errors can come with an empty message (an AggregateError of each address tried). */
function errorText(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: { message?: string }[] };
  return e.message || e.errors?.map((x) => x.message).join("; ") || e.code || String(err);
}
