// The cluster's dynamic blocklist: a hash in Redis (cidr -> entry), read on every connection
// from a parsed copy in memory. A change made on any node bumps a version key and is
// announced on the cluster's channel, so every node reloads its copy at once; each node also
// compares the version every refresh_interval, for announcements it missed.

import type { RedisClient } from "bun";
import { parseCidr, type Cidr } from "../net/cidr.ts";
import { activeBlocks, blockCovering, type BlockEntry } from "../policy/store.ts";

export class SharedBlocklist {
  private entries: { cidr: Cidr; entry: BlockEntry }[] = [];
  private version: string | null = null;

  constructor(
    private readonly key: string,
    private readonly versionKey: string,
  ) {}

  blocked(ip: string, now: number): BlockEntry | null {
    return blockCovering(this.entries, ip, now);
  }

  list(now: number): BlockEntry[] {
    return activeBlocks(this.entries, now);
  }

  /** Adds or replaces an entry; the caller announces the change. */
  async add(c: RedisClient, e: BlockEntry): Promise<BlockEntry> {
    await c.send("HSET", [this.key, e.cidr, JSON.stringify({ reason: e.reason, createdAt: e.createdAt, expiresAt: e.expiresAt })]);
    await c.send("INCR", [this.versionKey]);
    await this.load(c);
    return this.entries.find((b) => b.entry.cidr === e.cidr)?.entry ?? e;
  }

  async remove(c: RedisClient, cidr: string): Promise<boolean> {
    const removed = Number(await c.send("HDEL", [this.key, cidr])) > 0;
    if (removed) await c.send("INCR", [this.versionKey]);
    await this.load(c);
    return removed;
  }

  /** Reloads when the version differs from the one loaded (or `force`). */
  async refresh(c: RedisClient, force = false): Promise<boolean> {
    const v = ((await c.send("GET", [this.versionKey])) as string | null) ?? "0";
    if (!force && v === this.version) return false;
    await this.load(c);
    return true;
  }

  /** Drops expired entries from Redis (the periodic clean-up). */
  async sweep(c: RedisClient, now: number): Promise<void> {
    const gone = this.entries.filter((b) => b.entry.expiresAt !== null && b.entry.expiresAt <= now).map((b) => b.entry.cidr);
    if (!gone.length) return;
    await c.send("HDEL", [this.key, ...gone]);
    await c.send("INCR", [this.versionKey]);
    await this.load(c);
  }

  private async load(c: RedisClient): Promise<void> {
    // The version first: a change landing between the two reads is seen at the next refresh.
    const v = ((await c.send("GET", [this.versionKey])) as string | null) ?? "0";
    const all = pairs(await c.send("HGETALL", [this.key]));
    this.entries = all.flatMap(([text, json]) => {
      const cidr = parseCidr(text);
      try {
        const e = JSON.parse(json) as { reason: string; createdAt: number; expiresAt: number | null };
        return cidr ? [{ cidr, entry: { cidr: text, reason: String(e.reason), createdAt: Number(e.createdAt), expiresAt: e.expiresAt === null ? null : Number(e.expiresAt) } }] : [];
      } catch {
        return [];
      }
    });
    this.entries.sort((a, b) => a.entry.createdAt - b.entry.createdAt);
    this.version = v;
  }
}

/** A hash's fields and values: a map with RESP3, a flat list with RESP2. */
function pairs(reply: unknown): [string, string][] {
  if (Array.isArray(reply)) {
    const out: [string, string][] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) out.push([String(reply[i]), String(reply[i + 1])]);
    return out;
  }
  return reply && typeof reply === "object" ? Object.entries(reply as Record<string, string>) : [];
}
