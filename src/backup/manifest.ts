// The manifest of a whole-service backup (manifest.json at the top of the backup directory):
// what the backup holds, file by file with size and sha256, what was deliberately left out,
// which mailraven made it and when. Written last, just before the backup directory gets its
// final name, so a backup with a manifest is complete; `mailraven backup --verify` and
// `mailraven restore` check every file against it before trusting any of them.
//
//   manifest.json
//   queue.db, spool/<queue id>     the queue (VACUUM INTO) and the bodies it needs
//   policy.db                      greylist, blocklist and other defense state (VACUUM INTO)
//   dkim/<domain>/...              outbound.dkim_dir: DKIM private keys and active selectors
//   acme/...                       state_dir/acme: ACME account key, certificate and its key
//   config/mailraven.yaml          the configuration file the relay ran with
//   config/files/<key>             files named by *_file keys (secrets only with include_secrets)

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { plainEntry } from "./safe-fs.ts";

export const MANIFEST = "manifest.json";
export const FORMAT = "mailraven-backup/1";

/** What `mailraven restore --only` can restore on its own. */
export type Component = "queue" | "policy" | "dkim" | "acme";
export const COMPONENTS: readonly Component[] = ["queue", "policy", "dkim", "acme"];

export interface ManifestFile {
  /** Relative to the backup directory, "/"-separated. */
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  /** Permission bits as octal text, e.g. "0600". */
  readonly mode: string;
}

/** A file the configuration names that the backup does not hold, and why. */
export interface LeftOut {
  readonly key: string;
  readonly path: string;
  readonly reason: string;
}

export interface Manifest {
  readonly format: string;
  readonly version: string;
  readonly created_at: string;
  readonly hostname: string;
  readonly state_dir: string;
  readonly duration_ms: number;
  readonly components: {
    readonly queue: { readonly messages: number; readonly spool_files: number; readonly schema: number };
    /** null: the relay had no policy.db yet. */
    readonly policy: { readonly greylist: number; readonly blocklist: number } | null;
    /** null: no DKIM key directory. */
    readonly dkim: { readonly source: string; readonly domains: readonly string[] } | null;
    /** null: no ACME directory. */
    readonly acme: { readonly source: string; readonly files: number } | null;
    readonly config: { readonly source: string | null; readonly include_secrets: boolean; readonly copied: readonly { key: string; path: string; as: string }[] };
  };
  readonly left_out: readonly LeftOut[];
  readonly files: readonly ManifestFile[];
}

/** The component a file of the backup belongs to; "config" for the configuration copy. */
export function componentOf(path: string): Component | "config" | null {
  if (path === "queue.db" || path.startsWith("spool/")) return "queue";
  if (path === "policy.db") return "policy";
  if (path.startsWith("dkim/")) return "dkim";
  if (path.startsWith("acme/")) return "acme";
  if (path.startsWith("config/")) return "config";
  return null;
}

/** A relative path that stays inside the backup: no "..", no absolute path, no empty segment. */
export function safeRelative(path: string): boolean {
  return path.length > 0 && path.length < 4096 && path.split("/").every((s) => s !== "" && s !== "." && s !== ".." && !s.includes("\0"));
}

/** Manifests are small; a huge file in its place is not one. */
const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

/** The manifest of a backup, null for a backup made before manifests (queue only); throws a reason when it is unusable. */
export function readManifest(backupDir: string): Manifest | null {
  const path = join(backupDir, MANIFEST);
  const kind = plainEntry(path);
  if (kind === undefined) return null;
  if (kind !== "file") throw new Error(`${path} is not a file`);
  const text = readFileSync(path, "utf8");
  if (text.length > MAX_MANIFEST_BYTES) throw new Error(`${path} is too large to be a manifest`);
  let doc: Manifest;
  try {
    doc = JSON.parse(text) as Manifest;
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || doc.format !== FORMAT) throw new Error(`${path} is not a mailraven backup manifest (expected format ${FORMAT})`);
  if (!Array.isArray(doc.files) || !doc.components || typeof doc.created_at !== "string") throw new Error(`${path} is incomplete (files, components or created_at missing)`);
  for (const f of doc.files) {
    if (!f || typeof f.path !== "string" || !safeRelative(f.path) || f.path === MANIFEST || typeof f.size !== "number" || typeof f.sha256 !== "string" || !componentOf(f.path)) {
      throw new Error(`${path} lists an unusable entry: ${JSON.stringify(f).slice(0, 200)}`);
    }
  }
  return doc;
}

export const modeText = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0");
