// What goes into a backup, one source at a time, each written below a new (partial) backup
// directory and returned as manifest entries: the two databases as transactionally consistent
// copies (SQLite's VACUUM INTO, taken while the relay keeps writing), the spool files the queue
// copy needs, the DKIM and ACME directories file by file, and the configuration file with the
// files its *_file keys name (secrets only when asked for).

import { Database } from "bun:sqlite";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { modeText, type LeftOut, type ManifestFile } from "./manifest.ts";
import { copyFileSafe, hashFileSafe, makeDir, plainEntry, walkTree } from "./safe-fs.ts";

function entry(root: string, rel: string, mode: number, copied?: { size: number; sha256: string }): ManifestFile {
  const { size, sha256 } = copied ?? hashFileSafe(join(root, rel));
  return { path: rel, size, sha256, mode: modeText(mode) };
}

/** VACUUM INTO from a database of the state directory; false when there is none. */
function vacuumInto(source: string, target: string): boolean {
  if (plainEntry(source) === undefined) return false;
  if (plainEntry(source) !== "file") throw new Error(`${source} is not a database file`);
  const db = new Database(source, { readonly: true });
  try {
    db.run("VACUUM INTO ?", [target]);
  } finally {
    db.close();
  }
  return true;
}

function integrity(db: Database, what: string): void {
  const check = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").all();
  if (check.length !== 1 || check[0]!.integrity_check !== "ok") throw new Error(`integrity check of the ${what} copy failed: ${check.map((r) => r.integrity_check).join("; ")}`);
}

export interface QueueCopy {
  readonly files: ManifestFile[];
  readonly messages: number;
  readonly spoolFiles: number;
  readonly schema: number;
}

/** queue.db and the spool files of the messages in the copy. */
export function snapshotQueue(stateDir: string, into: string): QueueCopy {
  const dbCopy = join(into, "queue.db");
  if (!vacuumInto(join(stateDir, "queue.db"), dbCopy)) throw new Error("no queue.db");
  makeDir(join(into, "spool"));
  const files: ManifestFile[] = [];
  const copy = new Database(dbCopy, { strict: true });
  let counts: { messages: number; schema: number };
  try {
    // A message whose spool file is gone finished (delivered or bounced) after the
    // snapshot: drop it from the copy rather than restore a message without a body.
    for (const { id } of copy.query<{ id: string }, []>("SELECT id FROM messages WHERE body IS NULL").all()) {
      const rel = `spool/${id}`;
      try {
        files.push(entry(into, rel, 0o600, copyFileSafe(join(stateDir, "spool", id), join(into, rel), 0o600)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        copy.run("DELETE FROM recipients WHERE message_id = ?", [id]);
        copy.run("DELETE FROM messages WHERE id = ?", [id]);
      }
    }
    integrity(copy, "queue");
    counts = {
      messages: copy.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM messages").get()!.n,
      schema: copy.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version,
    };
    copy.run("PRAGMA journal_mode = DELETE");
  } finally {
    copy.close();
  }
  return { files: [entry(into, "queue.db", 0o600), ...files], messages: counts.messages, spoolFiles: files.length, schema: counts.schema };
}

/** policy.db (greylist, blocklist, caches); null when the relay has none yet. */
export function snapshotPolicy(stateDir: string, into: string): { files: ManifestFile[]; greylist: number; blocklist: number } | null {
  const dbCopy = join(into, "policy.db");
  if (!vacuumInto(join(stateDir, "policy.db"), dbCopy)) return null;
  const copy = new Database(dbCopy, { strict: true });
  let counts: { greylist: number; blocklist: number };
  try {
    integrity(copy, "policy");
    const tables = new Set(copy.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((t) => t.name));
    const count = (t: string) => (tables.has(t) ? copy.query<{ n: number }, []>(`SELECT COUNT(*) AS n FROM ${t}`).get()!.n : 0);
    counts = { greylist: count("greylist"), blocklist: count("blocklist") };
    copy.run("PRAGMA journal_mode = DELETE");
  } finally {
    copy.close();
  }
  return { files: [entry(into, "policy.db", 0o600)], ...counts };
}

/** Leftovers of an interrupted write (dkim/keys.ts and acme/store.ts write ".<name>.tmp" first). */
const isTemporary = (name: string) => /^\..*\.tmp$/.test(name);

/** A directory tree copied below `into/name`, symlinks refused; null when the source does not exist. */
export function copyTree(source: string, into: string, name: string): ManifestFile[] | null {
  if (plainEntry(source) === undefined) return null;
  if (plainEntry(source) !== "dir") throw new Error(`${source} is not a directory`);
  makeDir(join(into, name));
  const files: ManifestFile[] = [];
  for (const e of walkTree(source)) {
    if (isTemporary(e.path.split("/").pop()!)) continue;
    const rel = `${name}/${e.path}`;
    if (e.kind === "dir") makeDir(join(into, rel));
    else files.push(entry(into, rel, e.mode, copyFileSafe(join(source, e.path), join(into, rel), e.mode)));
  }
  return files;
}

export interface ConfigCopy {
  readonly files: ManifestFile[];
  readonly copied: { key: string; path: string; as: string }[];
  readonly leftOut: LeftOut[];
}

/** Files named by these keys are public (certificates, CA bundles) and always copied. */
const PUBLIC_FILE_KEYS = new Set(["cert_file", "ca_file"]);

/**
 * The configuration file as config/mailraven.yaml, and the files its *_file keys name under
 * config/files/<key path>. Those files are read the way the relay reads them (following a
 * symlink, as certbot's live/ directory needs): this runs as the relay's user. Secrets
 * (key_file, token_file, ...) are copied only with include_secrets; the manifest lists the rest.
 */
export function copyConfig(configPath: string, into: string, includeSecrets: boolean): ConfigCopy {
  makeDir(join(into, "config"));
  makeDir(join(into, "config", "files"));
  const files = [entry(into, "config/mailraven.yaml", 0o600, copyFileSafe(configPath, join(into, "config", "mailraven.yaml"), 0o600, true))];
  const copied: ConfigCopy["copied"] = [];
  const leftOut: LeftOut[] = [];
  let doc: unknown;
  try {
    doc = Bun.YAML.parse(readFileSync(join(into, "config", "mailraven.yaml"), "utf8"));
  } catch {
    // The relay would not have started with it; the copy is still worth having.
    return { files, copied, leftOut };
  }
  for (const { key, value } of fileKeys(doc)) {
    const leaf = key.slice(key.lastIndexOf(".") + 1);
    if (leaf.endsWith("_env")) {
      leftOut.push({ key, path: `$${value}`, reason: "read from the environment when the relay starts; set it again on the new host" });
      continue;
    }
    const path = resolve(dirname(configPath), value);
    if (!PUBLIC_FILE_KEYS.has(leaf) && !includeSecrets) {
      leftOut.push({ key, path, reason: "a secret; set backup.include_secrets: true to put it in backups" });
      continue;
    }
    const as = `config/files/${key}`;
    try {
      files.push(entry(into, as, 0o600, copyFileSafe(path, join(into, as), 0o600, true)));
      copied.push({ key, path, as });
    } catch (err) {
      leftOut.push({ key, path, reason: `cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
    }
  }
  return { files, copied, leftOut };
}

/** Every `*_file` and `*_env` key of the document with a string value, as "a.b[0].c_file". */
function fileKeys(doc: unknown, prefix = ""): { key: string; value: string }[] {
  if (Array.isArray(doc)) return doc.flatMap((v, i) => fileKeys(v, `${prefix}[${i}]`));
  if (!doc || typeof doc !== "object") return [];
  return Object.entries(doc as Record<string, unknown>).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "string" && (k.endsWith("_file") || k.endsWith("_env")) && /^[\w.\-[\]]+$/.test(key)) return [{ key, value: v }];
    return fileKeys(v, key);
  });
}
