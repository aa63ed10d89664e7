// /admin/greylist and /admin/blocklist: look at and edit the defenses' state.

import { Hono } from "hono";
import { parseCidr } from "../net/cidr.ts";
import type { BlockEntry, GreylistEntry } from "../policy/store.ts";
import type { BlockState, GreylistState } from "../state/types.ts";
import { parseDuration } from "../units.ts";
import { ApiError, jsonObject } from "./errors.ts";

const iso = (ms: number) => new Date(ms).toISOString();

const greylistJson = (e: GreylistEntry) => ({
  network: e.network,
  sender: e.sender,
  recipient: e.recipient,
  first_seen: iso(e.firstSeen),
  pass_after: iso(e.passAfter),
  expires_at: iso(e.expiresAt),
  passes: e.passes,
  state: e.passes > 0 ? "passed" : "waiting",
});

const blockJson = (b: BlockEntry) => ({ cidr: b.cidr, reason: b.reason, created_at: iso(b.createdAt), expires_at: b.expiresAt === null ? null : iso(b.expiresAt) });

function limitOf(raw: string | undefined): number {
  const limit = raw === undefined ? 100 : Number(raw);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ApiError(400, "bad_parameter", "limit must be an integer from 1 to 1000");
  return limit;
}

function cidrOf(raw: unknown): string {
  if (typeof raw !== "string" || !parseCidr(raw)) throw new ApiError(400, "bad_parameter", 'cidr must be an IPv4 or IPv6 address or network such as "192.0.2.7" or "2001:db8::/48"');
  return raw;
}

/** Edits go to the policy state in use: with a cluster's Redis, they apply on every node. */
export function policyRoutes(policy: GreylistState & BlockState, now: () => number = Date.now) {
  const greylist = new Hono();
  greylist.get("/", async (c) => {
    const limit = limitOf(c.req.query("limit"));
    const page = await policy.listGreylist(c.req.query("after") ?? "", limit);
    const last = page[page.length - 1];
    return c.json({ entries: page.map(greylistJson), next: page.length === limit && last ? `${last.network} ${last.sender} ${last.recipient}` : null });
  });
  greylist.delete("/", async (c) => {
    const network = c.req.query("network");
    if (!network) throw new ApiError(400, "bad_parameter", "network is required (e.g. 192.0.2.0/24); add sender and recipient to remove one triplet");
    const sender = c.req.query("sender") ?? null;
    const recipient = c.req.query("recipient") ?? null;
    if ((sender === null) !== (recipient === null)) throw new ApiError(400, "bad_parameter", "give both sender and recipient, or neither");
    // The state tells the checks (on every node) to forget their cached copies.
    const removed = await policy.removeGreylist(network, sender, recipient);
    return c.json({ removed });
  });

  const blocklist = new Hono();
  blocklist.get("/", (c) => c.json({ entries: policy.blocklist(now()).map(blockJson) }));
  blocklist.post("/", async (c) => {
    const body = await jsonObject(c, '{"cidr": "192.0.2.7", "reason": "abuse", "expires_in": "24h"}');
    const cidr = cidrOf(body.cidr);
    const reason = body.reason === undefined ? "added by the administrator" : body.reason;
    if (typeof reason !== "string" || reason.length > 200 || /[\r\n]/.test(reason)) throw new ApiError(400, "bad_parameter", "reason must be one line of at most 200 characters");
    let expiresAt: number | null = null;
    if (body.expires_in !== undefined && body.expires_in !== null) {
      const ms = typeof body.expires_in === "string" ? parseDuration(body.expires_in) : undefined;
      if (!ms) throw new ApiError(400, "bad_parameter", 'expires_in must be a duration such as "1h" or "7d"');
      expiresAt = now() + ms;
    }
    return c.json(blockJson(await policy.block(cidr, reason, now(), expiresAt)), 201);
  });
  blocklist.delete("/:cidr{.+}", async (c) => {
    const cidr = cidrOf(decodeURIComponent(c.req.param("cidr")));
    if (!(await policy.unblock(cidr))) throw new ApiError(404, "not_found", `${cidr} is not on the blocklist`);
    return c.json({ cidr, removed: true });
  });

  return { greylist, blocklist };
}
