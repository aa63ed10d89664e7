// A cluster's policy state in Redis (or Valkey), shared by every node: TTLs do the expiry,
// Lua scripts make counters and buckets atomic between nodes (scripts.ts). Each operation
// waits at most cluster.timeout; when Redis is down or late (redis-link.ts), it is answered
// by this node's own state (local.ts), or, where cluster.fallback says "open", lets mail
// through. Writes no reply depends on run in the background.
//
// Keys (all under cluster.key_prefix):
//   rl:<bucket>            token bucket (hash t, a)          TTL: its window
//   cr:<client>            connections in the minute          TTL: 1 minute
//   af:<client>            AUTH failures in the window        TTL: auth_failures.window
//   gl:<net> <from> <to>   greylist triplet (JSON)            expires with the triplet
//   gl:index               sorted set of triplets, for listing and removal by network
//   glp:<net>, gla:<net>   a network's passed triplets, its auto-allowlisting
//   gl:version             bumped when triplets are removed (nodes forget cached copies)
//   bl, bl:version         the dynamic blocklist (redis-blocklist.ts)
//   rv:<address>           recipient verification result      expires with it
//   pg:<client>            passed the pregreet test           TTL: 24 hours
//   sts:<domain>           MTA-STS policy                     expires with it
//   node:<name>            heartbeats (cluster-nodes.ts)
//   events                 pub/sub channel: "blocklist" or "greylist" changed

import type { RedisClient } from "bun";
import type { ClusterConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { BlockEntry, GreylistEntry, VerifyEntry } from "../policy/store.ts";
import type { LocalState } from "./local.ts";
import { SLOW_OP_MS, type RedisLink } from "./redis-link.ts";
import { parseCidr } from "../net/cidr.ts";
import { SharedBlocklist } from "./redis-blocklist.ts";
import { COUNT, GREYLIST_NEW, GREYLIST_PASS, run, SWEEP_INDEX, TAKE } from "./scripts.ts";
import { whenReady, type Bucket, type GreylistLookup, type Maybe, type PolicyState } from "./types.ts";

const CONNECTION_WINDOW_MS = 60_000;
const SWEEP_CHUNK = 500;

type Cfg = Pick<ClusterConfig, "keyPrefix" | "fallback" | "refreshIntervalMs">;

export class RedisState implements PolicyState {
  readonly kind = "redis";
  private readonly blocks: SharedBlocklist;
  private readonly greylistListeners: (() => void)[] = [];
  private greylistVersion: string | null = null;
  private subscriber: RedisClient | null = null;
  private readonly refreshTimer: ReturnType<typeof setInterval>;
  private readonly channel: string;

  constructor(
    private readonly cfg: Cfg,
    private readonly link: RedisLink,
    /** This node's own state: the fallback, and where entries made while Redis was away stay. */
    readonly local: LocalState,
    private readonly log: Logger,
  ) {
    this.blocks = new SharedBlocklist(this.k("bl"), this.k("bl:version"));
    this.channel = this.k("events");
    // Redis (back) up: whatever changed meanwhile is loaded, and change notices are listened to.
    link.onUp((c) => void this.resync(c));
    this.refreshTimer = setInterval(() => this.refresh(), cfg.refreshIntervalMs);
    this.refreshTimer.unref();
  }

  /** A key under the configured prefix. */
  k(name: string): string {
    return this.cfg.keyPrefix + name;
  }

  // Rate state.

  take(list: readonly Bucket[], now: number): Maybe<number> {
    const keys = list.map((b) => this.k(`rl:${b.key}`));
    const args = list.flatMap((b) => [b.limit.messages, b.limit.windowMs]);
    return this.link.call("rate_limits", async (c) => Number(await run(c, TAKE, keys, args)), () => (this.cfg.fallback.rate_limits === "open" ? -1 : this.local.take(list, now)));
  }

  countConnection(key: string, now: number): Maybe<number> {
    return this.link.call("connection_rate", async (c) => Number(await run(c, COUNT, [this.k(`cr:${key}`)], [CONNECTION_WINDOW_MS])), () =>
      this.cfg.fallback.connection_rate === "open" ? 0 : this.local.countConnection(key, now),
    );
  }

  // Greylisting.

  greylistLookup(network: string, sender: string, recipient: string, now: number, wantEntry: boolean): Maybe<GreylistLookup> {
    const keys = wantEntry ? [this.k(`gla:${network}`), this.tripletKey(network, sender, recipient)] : [this.k(`gla:${network}`)];
    return this.link.call(
      "greylist",
      async (c) => {
        const [allowed, value] = (await c.send("MGET", keys)) as (string | null)[];
        return { allowed: allowed !== null && allowed !== undefined, entry: value ? parseTriplet(network, value) : null };
      },
      () => (this.cfg.fallback.greylist === "open" ? { allowed: true, entry: null } : this.local.greylistLookup(network, sender, recipient, now, wantEntry)),
    );
  }

  greylistNew(e: GreylistEntry, cap: Bucket | null, now: number): Maybe<boolean> {
    const member = memberOf(e);
    const keys = [this.k(`gl:${member}`), this.k("gl:index"), ...(cap ? [this.k(`rl:${cap.key}`)] : [])];
    const args = [tripletValue(e), e.expiresAt, member, ...(cap ? [cap.limit.messages, cap.limit.windowMs] : [])];
    return this.link.call("greylist", async (c) => Number(await run(c, GREYLIST_NEW, keys, args)) === 1, () =>
      this.cfg.fallback.greylist === "open" ? true : this.local.greylistNew(e, cap, now),
    );
  }

  greylistPassed(e: GreylistEntry, firstPass: { readonly after: number; readonly until: number } | null): void {
    const member = memberOf(e);
    const keys = [this.k(`gl:${member}`), this.k("gl:index"), this.k(`glp:${e.network}`), this.k(`gla:${e.network}`)];
    const args = [tripletValue(e), e.expiresAt, member, ...(firstPass ? [firstPass.after, firstPass.until] : [])];
    this.link.write("greylist", (c) => run(c, GREYLIST_PASS, keys, args), () => {
      if (this.cfg.fallback.greylist === "local") this.local.greylistPassed(e, firstPass);
    });
  }

  greylistRoom(maxBytes: number): boolean {
    // Redis has its own ceiling (maxmemory); policy.db's applies while it is the fallback.
    return this.link.up || this.local.greylistRoom(maxBytes);
  }

  listGreylist(after: string, limit: number): Maybe<GreylistEntry[]> {
    return this.link.call(
      "greylist",
      async (c) => {
        const out: GreylistEntry[] = [];
        let from = after ? `(${after}` : "-";
        // Members whose triplet expired are skipped (and dropped); a few rounds fill the page.
        for (let round = 0; round < 10 && out.length < limit; round++) {
          const members = (await c.send("ZRANGEBYLEX", [this.k("gl:index"), from, "+", "LIMIT", "0", String(limit - out.length)])) as string[];
          if (!members.length) break;
          const values = (await c.send("MGET", members.map((m) => this.k(`gl:${m}`)))) as (string | null)[];
          const gone = members.filter((_, i) => !values[i]);
          if (gone.length) await c.send("ZREM", [this.k("gl:index"), ...gone]);
          members.forEach((m, i) => {
            const e = values[i] ? parseTriplet(m.slice(0, m.indexOf(" ")), values[i]!) : null;
            if (e) out.push(e);
          });
          from = `(${members[members.length - 1]}`;
        }
        return out;
      },
      () => this.local.listGreylist(after, limit),
      SLOW_OP_MS,
    );
  }

  removeGreylist(network: string, sender: string | null, recipient: string | null): Maybe<number> {
    const removed = this.link.call(
      "greylist",
      async (c) => {
        const index = this.k("gl:index");
        // Every member of a network starts with "<network> ": from there up to "<network>!".
        const members = sender === null || recipient === null ? ((await c.send("ZRANGEBYLEX", [index, `[${network} `, `(${network}!`])) as string[]) : [`${network} ${sender} ${recipient}`];
        let n = 0;
        for (let i = 0; i < members.length; i += SWEEP_CHUNK) {
          const chunk = members.slice(i, i + SWEEP_CHUNK);
          n += Number(await c.send("DEL", chunk.map((m) => this.k(`gl:${m}`))));
          await c.send("ZREM", [index, ...chunk]);
        }
        if (sender === null || recipient === null) await c.send("DEL", [this.k(`glp:${network}`)]);
        await c.send("INCR", [this.k("gl:version")]);
        await c.send("PUBLISH", [this.channel, "greylist"]);
        return n;
      },
      () => this.local.removeGreylist(network, sender, recipient),
      SLOW_OP_MS,
    );
    const forget = (n: number) => (this.greylistChanged(), n);
    return whenReady(removed, forget);
  }

  onGreylistChange(listener: () => void): void {
    this.greylistListeners.push(listener);
  }

  // The blocklist: this node's copy of the shared list, plus entries it made while Redis was away.

  blocked(ip: string, now: number): BlockEntry | null {
    return this.blocks.blocked(ip, now) ?? this.local.blocked(ip, now);
  }

  blocklist(now: number): BlockEntry[] {
    const shared = this.blocks.list(now);
    return [...shared, ...this.local.blocklist(now).filter((l) => !shared.some((s) => s.cidr === l.cidr))];
  }

  block(cidr: string, reason: string, now: number, expiresAt: number | null): Maybe<BlockEntry> {
    // Checked (and thrown) here as the local store does, before anything is written.
    if (!parseCidr(cidr)) throw new Error(`not a network: ${cidr}`);
    const entry: BlockEntry = { cidr, reason, createdAt: now, expiresAt };
    return this.link.call(
      "blocklist",
      async (c) => {
        const e = await this.blocks.add(c, entry);
        await c.send("PUBLISH", [this.channel, "blocklist"]);
        return e;
      },
      () => this.local.block(cidr, reason, now, expiresAt),
      SLOW_OP_MS,
    );
  }

  unblock(cidr: string): Maybe<boolean> {
    const here = this.local.unblock(cidr);
    return this.link.call(
      "blocklist",
      async (c) => {
        const removed = await this.blocks.remove(c, cidr);
        if (removed) await c.send("PUBLISH", [this.channel, "blocklist"]);
        return removed || here;
      },
      () => here,
      SLOW_OP_MS,
    );
  }

  // AUTH failures.

  countAuthFailure(key: string, windowMs: number, now: number): Maybe<number> {
    return this.link.call("auth_failures", async (c) => Number(await run(c, COUNT, [this.k(`af:${key}`)], [windowMs])), () =>
      this.cfg.fallback.auth_failures === "open" ? 0 : this.local.countAuthFailure(key, windowMs, now),
    );
  }

  clearAuthFailures(key: string): void {
    this.local.clearAuthFailures(key);
    this.link.write("auth_failures", (c) => c.send("DEL", [this.k(`af:${key}`)]), () => {});
  }

  // Caches: a miss costs work, never mail, so they always fall back to this node's own.

  verifyEntry(address: string): Maybe<VerifyEntry | null> {
    return this.link.call("recipient_verification", async (c) => parseJson<VerifyEntry>(await c.send("GET", [this.k(`rv:${address}`)])), () => this.local.verifyEntry(address));
  }

  saveVerify(e: VerifyEntry): void {
    this.link.write("recipient_verification", (c) => c.send("SET", [this.k(`rv:${e.address}`), JSON.stringify(e), "PXAT", String(e.expiresAt)]), () => this.local.saveVerify(e));
  }

  pregreetPassed(key: string): Maybe<boolean> {
    // Passes seen by this node answer from memory; others are asked for once.
    if (this.local.pregreetPassed(key)) return true;
    return this.link.call(
      "pregreet",
      async (c) => {
        const ttl = Number(await c.send("PTTL", [this.k(`pg:${key}`)]));
        if (ttl > 0) this.local.savePregreetPass(key, ttl);
        return ttl > 0;
      },
      () => false,
    );
  }

  savePregreetPass(key: string, ttlMs: number): void {
    this.local.savePregreetPass(key, ttlMs);
    this.link.write("pregreet", (c) => c.send("SET", [this.k(`pg:${key}`), "1", "PX", String(ttlMs)]), () => {});
  }

  forgetPregreetPass(key: string): void {
    this.local.forgetPregreetPass(key);
    this.link.write("pregreet", (c) => c.send("DEL", [this.k(`pg:${key}`)]), () => {});
  }

  stsPolicy(domain: string): Maybe<string | null> {
    return this.link.call("mta_sts", async (c) => ((await c.send("GET", [this.k(`sts:${domain}`)])) as string | null) ?? null, () => this.local.stsPolicy(domain));
  }

  saveStsPolicy(domain: string, json: string, expiresAt: number): void {
    this.link.write("mta_sts", (c) => c.send("SET", [this.k(`sts:${domain}`), json, "PXAT", String(expiresAt)]), () => this.local.saveStsPolicy(domain, json, expiresAt));
  }

  removeStsPolicy(domain: string): void {
    this.local.removeStsPolicy(domain);
    this.link.write("mta_sts", (c) => c.send("DEL", [this.k(`sts:${domain}`)]), () => {});
  }

  // Upkeep.

  /** The hourly clean-up: this node's own store, expired blocks, and index members of expired triplets. */
  expire(now: number): void {
    this.local.expire(now);
    this.link.whenUp(async (c) => {
      await this.blocks.sweep(c, now);
      let from = "-";
      for (let round = 0; round < 10_000; round++) {
        const last = String(await run(c, SWEEP_INDEX, [this.k("gl:index")], [this.k("gl:"), from, SWEEP_CHUNK]));
        if (last === "") break;
        from = `(${last}`;
      }
    }, 60_000);
  }

  close(): void {
    clearInterval(this.refreshTimer);
    this.subscriber?.close();
    this.subscriber = null;
    this.link.close();
    this.local.close();
  }

  private tripletKey(network: string, sender: string, recipient: string): string {
    return this.k(`gl:${network} ${sender} ${recipient}`);
  }

  private greylistChanged(): void {
    for (const l of this.greylistListeners) l();
  }

  /** After (re)connecting: load the blocklist, forget cached triplets, listen to change notices. */
  private async resync(c: RedisClient): Promise<void> {
    try {
      await this.blocks.refresh(c, true);
      this.greylistVersion = ((await c.send("GET", [this.k("gl:version")])) as string | null) ?? "0";
      this.greylistChanged();
      await this.listen(c);
    } catch (err) {
      this.log.warn("cluster state could not be reloaded; retried at the next refresh", { error: (err as Error).message });
    }
  }

  private async listen(c: RedisClient): Promise<void> {
    this.subscriber?.close();
    const sub = await c.duplicate();
    this.subscriber = sub;
    sub.onclose = () => {
      if (this.subscriber === sub) this.subscriber = null;
    };
    await sub.subscribe(this.channel, (message) => {
      if (message === "greylist") this.greylistChanged();
      else if (message === "blocklist") this.refresh(true);
    });
  }

  /** The backstop: compares versions, reloads what changed, and listens again if the subscription was lost. */
  private refresh(blocklistChanged = false): void {
    this.link.whenUp(async (c) => {
      if (await this.blocks.refresh(c, blocklistChanged)) this.log.debug("cluster blocklist reloaded", { entries: this.blocks.list(Date.now()).length });
      const v = ((await c.send("GET", [this.k("gl:version")])) as string | null) ?? "0";
      if (this.greylistVersion !== null && v !== this.greylistVersion) this.greylistChanged();
      this.greylistVersion = v;
      if (!this.subscriber) await this.listen(c);
    });
  }
}

/** A triplet's index member, and (under gl:) its key: "<network> <sender> <recipient>", as the admin API pages it. */
function memberOf(e: GreylistEntry): string {
  return `${e.network} ${e.sender} ${e.recipient}`;
}

function tripletValue(e: GreylistEntry): string {
  return JSON.stringify({ s: e.sender, r: e.recipient, f: e.firstSeen, p: e.passAfter, e: e.expiresAt, n: e.passes });
}

function parseTriplet(network: string, value: string): GreylistEntry | null {
  const v = parseJson<{ s: string; r: string; f: number; p: number; e: number; n: number }>(value);
  return v ? { network, sender: v.s, recipient: v.r, firstSeen: v.f, passAfter: v.p, expiresAt: v.e, passes: v.n } : null;
}

function parseJson<T>(value: unknown): T | null {
  if (typeof value !== "string") return null;
  try {
    return JSON.parse(value) as T;
  } catch {
    return null;
  }
}
