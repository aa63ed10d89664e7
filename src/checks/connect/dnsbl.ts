// Connect stage: DNS block and allow lists with weights, like Postfix's postscreen_dnsbl_sites.
// All zones are asked in parallel; each listed zone whose answer passes its filter adds its
// weight (allowlists weigh negative); at or over the threshold the client is refused. Answers
// are cached for their TTL (NXDOMAIN for negative_ttl). A DNS failure never blocks anyone:
// the zone counts as not listed and the error is reported.

import { LRUCache } from "lru-cache";
import type { DnsblZone } from "../../config/types.ts";
import { DnsError, reverseName, type Resolver } from "../../dns/resolver.ts";
import { ACCEPT, reject, type Verdict } from "../../verdict.ts";
import type { ConnectContext } from "../types.ts";

const MAX_TTL_MS = 86_400_000;

export type DnsblCache = LRUCache<string, { addresses: readonly string[] }>;

export function dnsblCache(): DnsblCache {
  return new LRUCache({ max: 50_000, ttl: 300_000 });
}

export interface DnsblDeps {
  readonly resolver: Resolver;
  readonly cache: DnsblCache;
  /** Told the outcome of each zone: "listed", "clean" or "error". */
  readonly onResult: (zone: string, result: "listed" | "clean" | "error", err?: Error) => void;
}

export function matches(zone: DnsblZone, address: string): boolean {
  if (!zone.filter) return true;
  const octets = address.split(".").map(Number);
  return octets.length === 4 && zone.filter.every(([min, max], i) => octets[i]! >= min && octets[i]! <= max);
}

export function dnsblCheck(cfg: { zones: readonly DnsblZone[]; threshold: number; negativeTtlMs: number }, deps: DnsblDeps) {
  const lookup = async (name: string): Promise<readonly string[]> => {
    const cached = deps.cache.get(name);
    if (cached) return cached.addresses;
    try {
      const answer = await deps.resolver.a(name);
      deps.cache.set(name, { addresses: answer.records }, { ttl: Math.min(Math.max(answer.ttl, 1) * 1000, MAX_TTL_MS) });
      return answer.records;
    } catch (err) {
      if (err instanceof DnsError && err.isNegative) {
        deps.cache.set(name, { addresses: [] }, { ttl: cfg.negativeTtlMs });
        return [];
      }
      throw err;
    }
  };

  return async (ctx: ConnectContext): Promise<Verdict> => {
    if (ctx.trusted) return ACCEPT;
    const reversed = reverseName(ctx.ip);
    if (!reversed) return ACCEPT;
    const results = await Promise.all(
      cfg.zones.map(async (zone) => {
        try {
          const listed = (await lookup(`${reversed}.${zone.zone}`)).some((a) => matches(zone, a));
          deps.onResult(zone.zone, listed ? "listed" : "clean");
          return listed ? zone : null;
        } catch (err) {
          deps.onResult(zone.zone, "error", err as Error);
          return null;
        }
      }),
    );
    const hits = results.filter((z): z is DnsblZone => z !== null);
    const score = hits.reduce((sum, z) => sum + z.weight, 0);
    if (hits.length === 0 || score < cfg.threshold) return ACCEPT;
    const worst = hits.reduce((a, b) => (b.weight > a.weight ? b : a));
    return reject(554, "5.7.1", `Service unavailable; client [${ctx.ip}] blocked using ${worst.zone}`, `dnsbl ${worst.zone}`);
  };
}
