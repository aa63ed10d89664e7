// Per-route connection pools: at most `limit` sessions to one next hop at a time, idle
// sessions kept for reuse and closed after the idle TTL. A next hop is a configured route or,
// for MX delivery, one recipient domain: `open` knows how to reach it (connect.ts).

import type { HopConnection } from "./smtp-client.ts";

export class RoutePool {
  private idle: HopConnection[] = [];
  private active = 0;
  private readonly sweeper: ReturnType<typeof setInterval>;

  constructor(private readonly open: () => Promise<HopConnection>, readonly limit: number, private readonly idleTtlMs: number) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, idleTtlMs)).unref();
  }

  get hasCapacity(): boolean {
    return this.active < this.limit;
  }

  get busy(): number {
    return this.active;
  }

  /** Neither sessions in use nor idle ones: the pool can be dropped. */
  get empty(): boolean {
    return this.active === 0 && this.idle.length === 0;
  }

  /** Runs `work` on a pooled connection; the slot is held until it finishes. */
  async withConnection<T>(work: (c: HopConnection) => Promise<T>): Promise<T> {
    this.active++;
    try {
      let conn: HopConnection | undefined;
      while ((conn = this.idle.pop()) && !conn.usable);
      conn ??= await this.open();
      const result = await work(conn);
      if (conn.usable) this.idle.push(conn);
      return result;
    } finally {
      this.active--;
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const c of this.idle) c.close();
    this.idle = [];
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleTtlMs;
    this.idle = this.idle.filter((c) => (c.usable && c.lastUsed > cutoff) || (c.close(), false));
  }
}
