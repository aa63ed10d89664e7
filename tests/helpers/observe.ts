// What a test reads from a running relay besides its replies and logs: a Prometheus metric from
// the admin API, and counts from policy.db (read-only, as an admin would; WAL allows a reader).

import { join } from "node:path";
import { Database } from "bun:sqlite";
import parsePrometheus from "parse-prometheus-text-format";
import type { Relay } from "./relay.ts";

/** The value of `name` with these labels (0 when absent). */
export async function metric(relay: Relay, name: string, labels: Record<string, string> = {}): Promise<number> {
  const families = parsePrometheus(await (await relay.admin("GET", "/metrics", null)).text());
  const m = families.find((f) => f.name === name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return Number(m?.value ?? 0);
}

/** `sql` (a SELECT COUNT(*) AS n ...) against the relay's policy.db. */
export function policyCount(relay: Relay, sql: string): number {
  const db = new Database(join(relay.dir, "state", "policy.db"), { readonly: true });
  try {
    return db.query<{ n: number }, []>(sql).get()!.n;
  } finally {
    db.close();
  }
}
