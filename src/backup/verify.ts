// Checks a backup without restoring it (`mailraven backup --verify DIR`, and the first step of
// every restore): every file the manifest lists is there, a plain file, with its size and
// sha256; nothing else is there; the databases pass SQLite's integrity check and the queue
// copy has the spool file of every message that needs one. Never follows a symlink: a backup
// directory is writable by the service account, which could plant one.

import { Database } from "bun:sqlite";
import { realpathSync } from "node:fs";
import { join } from "node:path";
import { componentOf, MANIFEST, readManifest, type Component, type Manifest } from "./manifest.ts";
import { hashFileSafe, plainEntry, walkTree } from "./safe-fs.ts";

export interface VerifyReport {
  readonly path: string;
  /** null: a backup made before manifests (the queue only, no checksums to compare). */
  readonly manifest: Manifest | null;
  readonly components: readonly Component[];
  readonly files: number;
  readonly bytes: number;
  readonly messages: number;
  readonly spoolFiles: number;
  /** Empty when the backup is good. */
  readonly problems: readonly string[];
}

export function verifyBackup(given: string): VerifyReport {
  const problems: string[] = [];
  // The directory named on the command line may be reached through a symlink the admin made
  // ("latest"); nothing inside it is followed.
  let path = given;
  try {
    path = realpathSync(given);
  } catch (err) {
    problems.push(`${given}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such backup directory" : (err as Error).message}`);
    return { path, manifest: null, components: [], files: 0, bytes: 0, messages: 0, spoolFiles: 0, problems };
  }
  const report = (manifest: Manifest | null, extra: Partial<VerifyReport> = {}): VerifyReport => ({ path, manifest, components: [], files: 0, bytes: 0, messages: 0, spoolFiles: 0, problems, ...extra });
  let manifest: Manifest | null;
  let tree: ReturnType<typeof walkTree>;
  try {
    if (plainEntry(path) !== "dir") return (problems.push(`${path} is not a directory`), report(null));
    manifest = readManifest(path);
    tree = walkTree(path);
  } catch (err) {
    problems.push((err as Error).message);
    return report(null);
  }
  const present = new Set(tree.filter((e) => e.kind === "file").map((e) => e.path));
  present.delete(MANIFEST);

  let listed: { path: string; size: number; sha256: string | null }[];
  if (manifest) {
    listed = manifest.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 }));
  } else {
    // Before manifests a backup held queue.db and spool/ only.
    if (!present.has("queue.db")) return (problems.push(`${path} is not a mailraven backup: no ${MANIFEST} and no queue.db in it`), report(null));
    listed = [...present].filter((p) => componentOf(p) === "queue").map((p) => ({ path: p, size: -1, sha256: null }));
  }
  let bytes = 0;
  const found = new Set<string>();
  for (const f of listed) {
    if (!present.delete(f.path)) {
      problems.push(`${f.path} is missing`);
      continue;
    }
    found.add(f.path);
    try {
      const got = hashFileSafe(join(path, f.path));
      bytes += got.size;
      if (f.sha256 !== null && (got.size !== f.size || got.sha256 !== f.sha256)) problems.push(`${f.path} differs from the manifest (size ${got.size}, expected ${f.size}; sha256 ${got.sha256.slice(0, 12)}..., expected ${f.sha256.slice(0, 12)}...)`);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  for (const extra of present) problems.push(`${extra} is not in the manifest`);

  const components = [...new Set(listed.map((f) => componentOf(f.path)).filter((c): c is Component => c !== null && c !== "config"))];
  // The databases are opened even when a checksum differed: the operator learns whether the
  // damaged file is still a usable database. (walkTree refused any symlink already.)
  const queue = found.has("queue.db") ? checkQueue(path, listed.map((f) => f.path), problems) : { messages: 0, spoolFiles: 0 };
  if (found.has("policy.db")) checkDatabase(join(path, "policy.db"), problems, () => {});
  if (manifest && problems.length === 0 && queue.messages !== manifest.components.queue.messages) {
    problems.push(`queue.db holds ${queue.messages} message(s), the manifest says ${manifest.components.queue.messages}`);
  }
  return report(manifest, { components, files: listed.length, bytes, messages: queue.messages, spoolFiles: queue.spoolFiles });
}

/** The queue copy: integrity, and a spool file for every message whose body is not inline. */
function checkQueue(path: string, files: readonly string[], problems: string[]): { messages: number; spoolFiles: number } {
  const out = { messages: 0, spoolFiles: 0 };
  checkDatabase(join(path, "queue.db"), problems, (db) => {
    const spool = new Set(files.filter((f) => f.startsWith("spool/")).map((f) => f.slice("spool/".length)));
    const needed = db.query<{ id: string }, []>("SELECT id FROM messages WHERE body IS NULL").all().map((r) => r.id);
    const missing = needed.filter((id) => !spool.has(id));
    if (missing.length) problems.push(`incomplete: spool files missing for ${missing.length} message(s), e.g. ${missing[0]}`);
    out.messages = db.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM messages").get()!.n;
    out.spoolFiles = needed.length;
  });
  return out;
}

function checkDatabase(file: string, problems: string[], more: (db: Database) => void): void {
  let db: Database;
  try {
    db = new Database(file, { readonly: true, strict: true });
  } catch (err) {
    problems.push(`${file} cannot be opened: ${(err as Error).message}`);
    return;
  }
  try {
    const check = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").all();
    if (check.length !== 1 || check[0]!.integrity_check !== "ok") problems.push(`${file} failed its integrity check: ${check.map((r) => r.integrity_check).join("; ")}`);
    else more(db);
  } catch (err) {
    problems.push(`${file} is not a valid database: ${(err as Error).message}`);
  } finally {
    db.close();
  }
}
