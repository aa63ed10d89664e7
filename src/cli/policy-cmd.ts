// `mailraven greylist ls|rm` and `mailraven block ls|add|rm`: the admin API's policy routes from a shell.

import type { Config } from "../config/types.ts";
import { adminClient } from "./admin-client.ts";
import { UsageError } from "./commands.ts";
import { table } from "./table.ts";

export interface PolicyArgs {
  readonly positionals: readonly string[];
  readonly json: boolean;
  readonly reason?: string;
  readonly for?: string;
  readonly limit?: string;
}

type Grey = { network: string; sender: string; recipient: string; state: string; passes: number; pass_after: string; expires_at: string };
type Block = { cidr: string; reason: string; created_at: string; expires_at: string | null };

export async function greylistCommand(config: Config, a: PolicyArgs, out: (s: string) => void): Promise<number> {
  const api = adminClient(config);
  const [verb, network, sender, recipient] = a.positionals;
  const show = (body: unknown, text: () => string) => out(a.json ? `${JSON.stringify(body, null, 2)}\n` : text());
  switch (verb) {
    case "ls":
    case undefined: {
      const body = (await api.request("GET", `/admin/greylist${a.limit ? `?limit=${encodeURIComponent(a.limit)}` : ""}`)) as { entries: Grey[] };
      show(body, () =>
        table(["NETWORK", "SENDER", "RECIPIENT", "STATE", "PASSES", "PASS AFTER", "EXPIRES"], body.entries.map((e) => [e.network, e.sender || "<>", e.recipient, e.state, String(e.passes), e.pass_after, e.expires_at])) +
        `${body.entries.length} triplet(s)\n`,
      );
      return 0;
    }
    case "rm": {
      if (!network || (sender === undefined) !== (recipient === undefined)) throw new UsageError("usage: mailraven greylist rm NETWORK [SENDER RECIPIENT]", "greylist");
      const q = new URLSearchParams({ network });
      if (sender !== undefined && recipient !== undefined) (q.set("sender", sender), q.set("recipient", recipient));
      const body = (await api.request("DELETE", `/admin/greylist?${q}`)) as { removed: number };
      show(body, () => `${body.removed} triplet(s) removed\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown greylist command "${verb}"; use ls or rm`, "greylist");
  }
}

export async function blockCommand(config: Config, a: PolicyArgs, out: (s: string) => void): Promise<number> {
  const api = adminClient(config);
  const [verb, cidr] = a.positionals;
  const show = (body: unknown, text: () => string) => out(a.json ? `${JSON.stringify(body, null, 2)}\n` : text());
  switch (verb) {
    case "ls":
    case undefined: {
      const body = (await api.request("GET", "/admin/blocklist")) as { entries: Block[] };
      show(body, () => table(["NETWORK", "EXPIRES", "ADDED", "REASON"], body.entries.map((b) => [b.cidr, b.expires_at ?? "never", b.created_at, b.reason])) + `${body.entries.length} entr${body.entries.length === 1 ? "y" : "ies"}\n`);
      return 0;
    }
    case "add": {
      if (!cidr) throw new UsageError("usage: mailraven block add CIDR [--for 24h] [--reason TEXT]", "block");
      const body = (await api.request("POST", "/admin/blocklist", { cidr, reason: a.reason, expires_in: a.for })) as Block;
      show(body, () => `${body.cidr} blocked${body.expires_at ? ` until ${body.expires_at}` : ""}\n`);
      return 0;
    }
    case "rm": {
      if (!cidr) throw new UsageError("usage: mailraven block rm CIDR", "block");
      const body = await api.request("DELETE", `/admin/blocklist/${encodeURIComponent(cidr)}`);
      show(body, () => `${cidr} unblocked\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown block command "${verb}"; use ls, add or rm`, "block");
  }
}
