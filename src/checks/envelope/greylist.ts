// RCPT stage: greylisting (client network, sender, recipient). The first attempt of a new
// triplet is deferred; a retry after `delay` and within `retry_window` passes, and the
// triplet is then known for `pass_ttl`. Networks with many passed triplets are allowlisted.
// State is in the policy state (policy.db, or Redis shared by a cluster's nodes) with an LRU
// in front, so known senders cost no read; the reply waits for one read at most, never a write.
// Writes are bounded: new triplets per client network per window (new_triplets_per_network)
// and policy.db's size (max_database_size); past either a new triplet is deferred unwritten.

import { LRUCache } from "lru-cache";
import type { GreylistConfig } from "../../config/types.ts";
import { anyContains, parseIp } from "../../net/cidr.ts";
import type { GreylistEntry } from "../../policy/store.ts";
import { whenReady, type GreylistLookup, type GreylistState, type Maybe } from "../../state/types.ts";
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

export function greylistCheck(cfg: GreylistConfig, state: GreylistState, cache: GreylistCache, now: () => number, onDecision: (d: GreylistDecision) => void) {
  const allowedStatically = (ctx: RcptContext): boolean => {
    const senderDomain = ctx.sender.slice(ctx.sender.lastIndexOf("@") + 1).toLowerCase();
    const rcpt = ctx.recipient.address.toLowerCase();
    return (
      anyContains(cfg.allowClients, ctx.client.ip) ||
      (ctx.sender !== "" && cfg.allowSenders.includes(senderDomain)) ||
      cfg.allowRecipients.includes(rcpt) ||
      cfg.allowRecipients.includes(ctx.recipient.domain)
    );
  };

  return (ctx: RcptContext): Maybe<Verdict> => {
    if (ctx.client.trusted || ctx.client.allowlisted || ctx.client.user !== null) return ACCEPT;
    const t = now();
    if (allowedStatically(ctx)) {
      onDecision("allowlisted");
      return ACCEPT;
    }
    const network = clientNetwork(ctx.client.ip);
    const sender = ctx.sender.toLowerCase();
    const recipient = ctx.recipient.address.toLowerCase();
    const key = `${network} ${sender} ${recipient}`;
    const cached = cache.get(key);
    // A triplet known to have passed, with no extension due, answers from memory.
    if (cached && cached.passes > 0 && t <= cached.expiresAt && t + cfg.passTtlMs - cached.expiresAt <= EXTEND_STEP_MS) {
      onDecision("pass");
      return ACCEPT;
    }
    const decide = (found: GreylistLookup): Verdict => {
      if (found.allowed) {
        onDecision("allowlisted");
        return ACCEPT;
      }
      const e = cached ?? found.entry;
      if (!e || t > e.expiresAt) return fresh(network, key, t);
      if (t < e.passAfter) {
        cache.set(key, e);
        onDecision("early");
        return greylisted(e.passAfter - t);
      }
      if (e.passes === 0 || t + cfg.passTtlMs - e.expiresAt > EXTEND_STEP_MS) {
        const next = { ...e, passes: e.passes + 1, expiresAt: t + cfg.passTtlMs };
        state.greylistPassed(next, e.passes === 0 && cfg.autoAllowlistAfter > 0 ? { after: cfg.autoAllowlistAfter, until: t + cfg.passTtlMs } : null);
        cache.set(key, next);
      } else cache.set(key, e);
      onDecision("pass");
      return ACCEPT;
    };
    return whenReady(state.greylistLookup(network, sender, recipient, t, cached === undefined), decide);

    /** A new triplet (or one whose window passed): deferred, and written if its network's budget and the database allow. */
    function fresh(net: string, cacheKey: string, at: number): Verdict {
      // policy.db at its ceiling: deferred as if greylisted, and nothing is written.
      if (!state.greylistRoom(cfg.maxDatabaseSize)) {
        onDecision("full");
        return greylisted(cfg.delayMs);
      }
      const next: GreylistEntry = { network: net, sender, recipient, firstSeen: at, passAfter: at + cfg.delayMs, expiresAt: at + cfg.retryWindowMs, passes: 0 };
      // One client network must not fill the state: past its share of new triplets nothing is written.
      const cap = cfg.newTripletsPerNetwork ? { key: `greylist-new ${net}`, limit: cfg.newTripletsPerNetwork } : null;
      const written = (ok: boolean) => {
        if (ok) cache.set(cacheKey, next);
        onDecision(ok ? "new" : "capped");
      };
      // The reply is the same either way, so it does not wait for the write.
      const w = state.greylistNew(next, cap, at);
      if (w instanceof Promise) w.then(written, () => {});
      else written(w);
      return greylisted(cfg.delayMs);
    }
  };
}

function greylisted(waitMs: number): Verdict {
  return defer(451, "4.7.1", `Greylisted, please try again in ${Math.ceil(waitMs / 1000)} seconds`, "greylisted");
}
