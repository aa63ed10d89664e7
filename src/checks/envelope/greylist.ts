// RCPT stage: greylisting (client network, sender, recipient). The first attempt of a new
// triplet is deferred; a retry after `delay` and within `retry_window` passes, and the
// triplet is then known for `pass_ttl`. Networks with many passed triplets are allowlisted.
// State is in policy.db with an LRU in front so known senders cost no database read.
// Writes are bounded: new triplets per client network per window (new_triplets_per_network)
// and policy.db's size (max_database_size); past either a new triplet is deferred unwritten.

import { LRUCache } from "lru-cache";
import type { GreylistConfig } from "../../config/types.ts";
import { anyContains, parseIp } from "../../net/cidr.ts";
import { take, type Buckets } from "./rate-limit.ts";
import type { GreylistEntry, PolicyStore } from "../../policy/store.ts";
import { ACCEPT, defer, type Verdict } from "../../verdict.ts";
import type { RcptContext } from "../types.ts";

/** Avoid a write per message for busy senders: extend a pass only when it would gain a day. */
const EXTEND_STEP_MS = 86_400_000;

export type GreylistDecision = "allowlisted" | "new" | "early" | "pass" | "capped" | "full";
export type GreylistCache = LRUCache<string, GreylistEntry>;

export function greylistCache(): GreylistCache {
  return new LRUCache({ max: 50_000 });
}

/** The client's network: /24 for IPv4, /64 for IPv6 (senders retry from pools). */
export function clientNetwork(ip: string): string {
  const parsed = parseIp(ip);
  if (!parsed) return ip;
  if (!parsed.v6) {
    const v = Number(parsed.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.0/24`;
  }
  const groups = [];
  for (let i = 7; i >= 4; i--) groups.push(((parsed.value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return `${groups.join(":")}::/64`;
}

/** `newTriplets` counts new triplets per client network (a token bucket each). */
export function greylistCheck(cfg: GreylistConfig, store: PolicyStore, cache: GreylistCache, now: () => number, onDecision: (d: GreylistDecision) => void, newTriplets: Buckets) {
  const allowed = (ctx: RcptContext, network: string, t: number): boolean => {
    const senderDomain = ctx.sender.slice(ctx.sender.lastIndexOf("@") + 1).toLowerCase();
    const rcpt = ctx.recipient.address.toLowerCase();
    return (
      anyContains(cfg.allowClients, ctx.client.ip) ||
      (ctx.sender !== "" && cfg.allowSenders.includes(senderDomain)) ||
      cfg.allowRecipients.includes(rcpt) ||
      cfg.allowRecipients.includes(ctx.recipient.domain) ||
      store.networkAllowed(network, t)
    );
  };

  return (ctx: RcptContext): Verdict => {
    if (ctx.client.trusted || ctx.client.allowlisted || ctx.client.user !== null) return ACCEPT;
    const t = now();
    const network = clientNetwork(ctx.client.ip);
    if (allowed(ctx, network, t)) {
      onDecision("allowlisted");
      return ACCEPT;
    }
    const sender = ctx.sender.toLowerCase();
    const recipient = ctx.recipient.address.toLowerCase();
    const key = `${network} ${sender} ${recipient}`;
    const e = cache.get(key) ?? store.greylistEntry(network, sender, recipient);
    const save = (next: GreylistEntry) => {
      store.saveGreylist(next);
      cache.set(key, next);
    };
    if (!e || t > e.expiresAt) {
      // One client network must not fill the database: past its share, or when policy.db is at
      // its ceiling, the client is deferred as if greylisted and nothing is written.
      if (cfg.newTripletsPerNetwork && !take(newTriplets, network, cfg.newTripletsPerNetwork, t)) {
        onDecision("capped");
        return greylisted(cfg.delayMs);
      }
      if (store.sizeBytes() > cfg.maxDatabaseSize) {
        onDecision("full");
        return greylisted(cfg.delayMs);
      }
      save({ network, sender, recipient, firstSeen: t, passAfter: t + cfg.delayMs, expiresAt: t + cfg.retryWindowMs, passes: 0 });
      onDecision("new");
      return greylisted(cfg.delayMs);
    }
    if (t < e.passAfter) {
      cache.set(key, e);
      onDecision("early");
      return greylisted(e.passAfter - t);
    }
    if (e.passes === 0 || t + cfg.passTtlMs - e.expiresAt > EXTEND_STEP_MS) {
      save({ ...e, passes: e.passes + 1, expiresAt: t + cfg.passTtlMs });
      if (e.passes === 0 && cfg.autoAllowlistAfter > 0 && store.passedTriplets(network) >= cfg.autoAllowlistAfter) store.allowNetwork(network, t + cfg.passTtlMs);
    } else cache.set(key, e);
    onDecision("pass");
    return ACCEPT;
  };
}

function greylisted(waitMs: number): Verdict {
  return defer(451, "4.7.1", `Greylisted, please try again in ${Math.ceil(waitMs / 1000)} seconds`, "greylisted");
}
