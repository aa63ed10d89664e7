// `mailraven backup` and `mailraven restore`. Run as root (cron, scripts/restore.sh), both
// first become the state directory's owner, so every file they write is the relay's and no
// symlink the service account planted can make root read or write something else.

import { resolve } from "node:path";
import type { Config } from "../config/types.ts";
import { COMPONENTS, type Component } from "../backup/manifest.ts";
import { restoreBackup, type RestoreResult } from "../backup/restore.ts";
import { dropToOwnerOf } from "../backup/safe-fs.ts";
import { BackupError, createBackup, type BackupResult } from "../backup/snapshot.ts";
import { verifyBackup } from "../backup/verify.ts";
import { adminClient, CliError } from "./admin-client.ts";
import { UsageError } from "./commands.ts";

export interface BackupArgs {
  readonly offline: boolean;
  readonly verify: string | undefined;
  readonly json: boolean;
  /** The configuration file the relay runs with; null for the embedded one. */
  readonly configPath: string | null;
  readonly version: string;
}

export async function backupCommand(config: Config, a: BackupArgs, out: (s: string) => void): Promise<number> {
  const json = (o: unknown) => out(`${JSON.stringify(o, null, 2)}\n`);
  if (a.verify !== undefined) {
    // Read-only, and the backup may have come from another host: read it as its owner.
    dropToOwnerOf(resolve(a.verify), true);
    const r = verifyBackup(resolve(a.verify));
    if (a.json) json({ path: r.path, ok: r.problems.length === 0, problems: r.problems, components: r.components, files: r.files, bytes: r.bytes, messages: r.messages, version: r.manifest?.version ?? null, created_at: r.manifest?.created_at ?? null });
    else if (r.problems.length) out(`${r.path}: NOT GOOD\n${r.problems.map((p) => `  ${p}\n`).join("")}`);
    else out(`${r.path}: good: ${r.files} files, ${r.bytes} bytes, ${r.messages} queued message(s); ${r.components.join(", ")}${r.manifest ? `; made by mailraven ${r.manifest.version} at ${r.manifest.created_at}` : " (made before manifests: the queue only, no checksums)"}\n`);
    return r.problems.length ? 1 : 0;
  }
  let result: BackupResult;
  if (a.offline) {
    dropToOwnerOf(config.stateDir);
    try {
      result = await createBackup({ config, configPath: a.configPath, version: a.version });
    } catch (err) {
      // The admin API (which runs this) passes the public part on to its client.
      if (a.json && err instanceof BackupError) json({ error: { code: err.code, message: err.publicMessage } });
      throw err;
    }
  } else {
    result = (await adminClient(config).request("POST", "/admin/backup")) as BackupResult;
  }
  if (a.json) json(result);
  else out(backupSummary(result));
  return 0;
}

function backupSummary(r: BackupResult): string {
  const c = r.manifest.components;
  const held = [`queue (${r.messages} message(s), ${r.spool_files} spool file(s))`, c.policy && "policy", c.dkim && `dkim (${c.dkim.domains.join(", ") || "no domain"})`, c.acme && "acme", c.config.source && "configuration"].filter(Boolean);
  const lines = [`backup written to ${r.path} in ${r.duration_ms} ms: ${held.join(", ")}; ${r.manifest.files.length} files listed in manifest.json`];
  for (const l of r.manifest.left_out) lines.push(`  left out: ${l.key} (${l.path}): ${l.reason}`);
  return `${lines.join("\n")}\n`;
}

export interface RestoreArgs {
  readonly positionals: readonly string[];
  readonly force: boolean;
  readonly only: readonly string[];
  readonly json: boolean;
  readonly configPath: string | null;
}

export function restoreCommand(config: Config, a: RestoreArgs, out: (s: string) => void): number {
  const [from, extra] = a.positionals;
  if (!from || extra !== undefined) throw new CliError("mailraven restore needs the backup directory, e.g. /var/lib/mailraven/backups/mailraven-20261121T020000Z");
  const only = a.only.flatMap((o) => o.split(",")).map((o) => o.trim()).filter(Boolean);
  const unknown = only.filter((o) => !COMPONENTS.includes(o as Component));
  if (unknown.length) throw new UsageError(`--only takes ${COMPONENTS.join(", ")} (or several, comma-separated), not ${unknown.join(", ")}`, "restore");
  dropToOwnerOf(config.stateDir);
  const r = restoreBackup(resolve(from), config, { force: a.force, only: only as Component[], configPath: a.configPath });
  if (a.json) out(`${JSON.stringify(r, null, 2)}\n`);
  else out(restoreSummary(r));
  return 0;
}

function restoreSummary(r: RestoreResult): string {
  const what = r.components.includes("queue") ? `${r.messages} message(s) (${r.components.join(", ")})` : r.components.join(", ");
  const lines = [`restored ${what} from ${r.restored_from}${r.previous_state_kept_in ? `; the previous state is in ${r.previous_state_kept_in}` : ""}`];
  if (r.config.copy) lines.push(`the configuration the backup was made with is ${r.config.copy}${r.config.same_as_current === true ? " (the same as the current one)" : r.config.same_as_current === false ? " (it differs from the current one: compare them before starting the relay)" : ""}`);
  for (const l of r.left_out) lines.push(`not in the backup: ${l.key} (${l.path}): put it back by hand`);
  return `${lines.join("\n")}\n`;
}
