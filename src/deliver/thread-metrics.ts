// Delivery metrics made on the delivery thread reach the one Prometheus registry the admin API
// serves (on the SMTP thread) as deltas: counted here, sent with the next batch, added there.

import type { Metrics } from "../metrics.ts";
import type { DeliveryMetrics } from "./worker.ts";

type Outcome = "delivered" | "deferred" | "failed";

export interface Deltas {
  readonly attempts: readonly (readonly [route: string, outcome: Outcome, n: number])[];
  /** deliverySeconds observations, one per delivered recipient. */
  readonly seconds: readonly number[];
  /** Recipients delivered over TLS. */
  readonly tls: number;
  readonly noRoute: number;
  readonly bounces: number;
}

export class MetricDeltas implements DeliveryMetrics {
  private attempts = new Map<string, { route: string; outcome: Outcome; n: number }>();
  private seconds: number[] = [];
  private tls = 0;
  private noRoute = 0;
  private bounces = 0;

  /** `changed`: a delta is waiting to be sent. */
  constructor(private readonly changed: () => void) {}

  readonly deliveryAttempts = {
    inc: (labels: { route: string; outcome: Outcome }): void => {
      const key = `${labels.outcome} ${labels.route}`;
      const entry = this.attempts.get(key);
      if (entry) entry.n++;
      else this.attempts.set(key, { route: labels.route, outcome: labels.outcome, n: 1 });
      this.changed();
    },
  };

  readonly deliveriesTls = {
    inc: (n: number): void => {
      this.tls += n;
      this.changed();
    },
  };

  readonly deliverySeconds = {
    observe: (seconds: number): void => {
      this.seconds.push(seconds);
      this.changed();
    },
  };

  readonly deliveryNoRoute = {
    inc: (n: number): void => {
      this.noRoute += n;
      this.changed();
    },
  };

  readonly bouncesQueued = {
    inc: (): void => {
      this.bounces++;
      this.changed();
    },
  };

  /** What was counted since the last call, or null when nothing was. */
  take(): Deltas | null {
    if (this.attempts.size === 0 && this.seconds.length === 0 && this.tls === 0 && this.noRoute === 0 && this.bounces === 0) return null;
    const attempts = [...this.attempts.values()].map((a) => [a.route, a.outcome, a.n] as const);
    const d: Deltas = { attempts, seconds: this.seconds, tls: this.tls, noRoute: this.noRoute, bounces: this.bounces };
    this.attempts = new Map();
    this.seconds = [];
    this.tls = 0;
    this.noRoute = 0;
    this.bounces = 0;
    return d;
  }
}

/** Adds deltas from the delivery thread to the registry. */
export function applyDeltas(metrics: Metrics, d: Deltas): void {
  for (const [route, outcome, n] of d.attempts) metrics.deliveryAttempts.inc({ route, outcome }, n);
  for (const s of d.seconds) metrics.deliverySeconds.observe(s);
  if (d.tls) metrics.deliveriesTls.inc(d.tls);
  if (d.noRoute) metrics.deliveryNoRoute.inc(d.noRoute);
  if (d.bounces) metrics.bouncesQueued.inc(d.bounces);
}
