// `mailraven cluster ls`: the admin API's /admin/cluster from a shell.

import type { Config } from "../config/types.ts";
import { adminClient } from "./admin-client.ts";
import { table } from "./table.ts";

type Node = { name: string; self: boolean; version: string; started_at: string; last_seen: string; queue: { messages: number; recipients: number; oldest_age_seconds: number } };
type Cluster = { enabled: boolean; node: string; redis: "up" | "down" | null; nodes: Node[] };

export async function clusterCommand(config: Config, a: { readonly json: boolean }, out: (s: string) => void): Promise<number> {
  const body = (await adminClient(config).request("GET", "/admin/cluster")) as Cluster;
  if (a.json) return (out(`${JSON.stringify(body, null, 2)}\n`), 0);
  const rows = body.nodes.map((n) => [`${n.name}${n.self ? " *" : ""}`, String(n.queue.messages), String(n.queue.recipients), n.queue.oldest_age_seconds ? `${n.queue.oldest_age_seconds}s` : "-", n.last_seen, n.version]);
  const head = !body.enabled ? "cluster: off (a single node; cluster.enabled is false)\n" : body.redis === "down" ? "cluster: redis does not answer; only this node is shown\n" : "";
  out(head + table(["NODE", "MESSAGES", "RECIPIENTS", "OLDEST", "LAST SEEN", "VERSION"], rows) + `${body.nodes.length} node(s); * this node\n`);
  return 0;
}
