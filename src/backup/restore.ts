// Offline restore of a backup made by createBackup: verify all of it first, keep what is in the
// way aside (never overwrite, never delete), then put the copies in place, each component
// written under a temporary name and renamed, so a crash leaves the old state or the new one.
// Refuses while a relay runs on the state directory, refuses to replace existing state without
// `force`, and refuses symlinks on both sides (the caller has already dropped to the state
// directory's owner; see safe-fs.ts). The configuration copy is never written over the running
// configuration: the result says where it is and whether it differs.

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Config } from "../config/types.ts";
import { fsyncPath } from "../fsync.ts";
import { runningPid } from "../state-lock.ts";
import { componentOf, COMPONENTS, type Component, type LeftOut, type ManifestFile } from "./manifest.ts";
import { copyFileSafe, hashFileSafe, makeDir, plainEntry } from "./safe-fs.ts";
import { backupName } from "./snapshot.ts";
import { verifyBackup } from "./verify.ts";

export interface RestoreResult {
  readonly restored_from: string;
  readonly components: readonly Component[];
  readonly messages: number;
  readonly spool_files: number;
  readonly previous_state_kept_in: string | null;
  /** The configuration the backup was made with, to compare or install by hand. */
  readonly config: { readonly copy: string | null; readonly same_as_current: boolean | null };
  readonly left_out: readonly LeftOut[];
}

export class RestoreError extends Error {}

export interface RestoreOptions {
  readonly force: boolean;
  /** Restore only these components (default: all the backup holds). */
  readonly only?: readonly Component[] | null;
  readonly configPath?: string | null;
  readonly now?: Date;
}

interface Target {
  /** The directory the component's names are in. */
  readonly dir: string;
  /** Every name it occupies there (kept aside when present). */
  readonly names: readonly string[];
  /** What the restored copy is renamed to, in order: [name in the backup, name here]. */
  readonly moves: readonly (readonly [string, string])[];
}

/** Where each component lives on this host. */
function targets(config: Config): Record<Component, Target> {
  const s = config.stateDir;
  const dkim = config.outbound.dkimDir;
  const acme = config.acme?.dir ?? join(s, "acme");
  return {
    // spool/ before queue.db: a queue.db is never in place without the bodies it needs.
    queue: { dir: s, names: ["queue.db", "queue.db-wal", "queue.db-shm", "spool"], moves: [["spool", "spool"], ["queue.db", "queue.db"]] },
    policy: { dir: s, names: ["policy.db", "policy.db-wal", "policy.db-shm"], moves: [["policy.db", "policy.db"]] },
    dkim: { dir: dirname(dkim), names: [basename(dkim)], moves: [["dkim", basename(dkim)]] },
    acme: { dir: dirname(acme), names: [basename(acme)], moves: [["acme", basename(acme)]] },
  };
}

export function restoreBackup(backupPath: string, config: Config, opts: RestoreOptions): RestoreResult {
  const { stateDir } = config;
  const pid = runningPid(stateDir);
  if (pid !== null) throw new RestoreError(`mailraven (pid ${pid}) is running on ${stateDir}; stop it first (systemctl stop mailraven)`);
  const report = verifyBackup(backupPath);
  if (report.problems.length) throw new RestoreError(`${backupPath} cannot be restored:\n  ${report.problems.join("\n  ")}`);
  const wanted = opts.only?.length ? [...new Set(opts.only)] : report.components;
  const absent = wanted.filter((c) => !report.components.includes(c));
  if (absent.length) throw new RestoreError(`${backupPath} holds no ${absent.join(" or ")} (it holds ${report.components.join(", ")})`);
  const chosen = COMPONENTS.filter((c) => wanted.includes(c));
  // From here on the resolved directory: a symlink swapped in for it meanwhile is not followed.
  const source = report.path;
  const files = report.manifest?.files ?? legacyFiles(source);

  // Nothing is touched until every name in the way has been looked at (lstat, no following).
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const where = targets(config);
  const inTheWay: string[] = [];
  for (const c of chosen) {
    for (const name of where[c].names) {
      const path = join(where[c].dir, name);
      if (plainEntry(path) !== undefined && !emptyDir(path)) inTheWay.push(path);
    }
  }
  if (inTheWay.length && !opts.force) {
    throw new RestoreError(`${inTheWay.join(", ")} already exist${inTheWay.length === 1 ? "s" : ""}; pass --force to restore over ${inTheWay.length === 1 ? "it" : "them"} (the current state is kept aside, not deleted)`);
  }
  const stamp = backupName(opts.now ?? new Date()).slice("mailraven-".length);
  const keptIn = inTheWay.length ? keepAside(config, chosen, stamp) : null;

  for (const c of chosen) restoreComponent(source, files.filter((f) => componentOf(f.path) === c), where[c], c);
  fsyncPath(stateDir);

  return {
    restored_from: source,
    components: chosen,
    messages: chosen.includes("queue") ? report.messages : 0,
    spool_files: chosen.includes("queue") ? report.spoolFiles : 0,
    previous_state_kept_in: keptIn,
    config: configNote(source, report.manifest !== null, opts.configPath ?? null),
    left_out: report.manifest?.left_out ?? [],
  };
}

/**
 * Moves the current state of the chosen components into state_dir/pre-restore-<time>/ (rename:
 * a symlink is moved, never followed). A DKIM directory outside the state directory is renamed
 * next to itself instead, since rename cannot cross file systems.
 */
function keepAside(config: Config, chosen: readonly Component[], stamp: string): string {
  const keptIn = join(config.stateDir, `pre-restore-${stamp}`);
  mkdirSync(keptIn, { mode: 0o700 });
  const where = targets(config);
  for (const c of chosen) {
    for (const name of where[c].names) {
      const from = join(where[c].dir, name);
      if (plainEntry(from) === undefined) continue;
      const to = where[c].dir === config.stateDir ? join(keptIn, name) : `${from}.pre-restore-${stamp}`;
      renameSync(from, to);
    }
  }
  fsyncPath(keptIn);
  return keptIn;
}

/**
 * Copies one component's files below a temporary directory next to its place, checks every copy
 * against the manifest's sha256 (the backup could change while it is read), then renames it into
 * place.
 */
function restoreComponent(backupPath: string, files: readonly (ManifestFile | LegacyFile)[], target: Target, c: Component): void {
  // A dkim_dir outside the state directory may not exist yet on a new host.
  mkdirSync(target.dir, { recursive: true, mode: 0o700 });
  const tmp = join(target.dir, `.restoring-${c}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  makeDir(tmp);
  try {
    for (const [from] of target.moves) if (!from.endsWith(".db")) makeDir(join(tmp, from));
    for (const f of files) {
      const parts = f.path.split("/");
      for (let i = 1; i < parts.length; i++) makeDir(join(tmp, ...parts.slice(0, i)));
      const mode = "mode" in f ? Number.parseInt(f.mode, 8) : 0o600;
      const copied = copyFileSafe(join(backupPath, f.path), join(tmp, f.path), mode);
      if ("sha256" in f && copied.sha256 !== f.sha256) throw new RestoreError(`${join(backupPath, f.path)} changed while it was restored; run the restore again`);
    }
    syncDirs(tmp, files);
    for (const [from, to] of target.moves) renameSync(join(tmp, from), join(target.dir, to));
    fsyncPath(target.dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function syncDirs(root: string, files: readonly { path: string }[]): void {
  const dirs = new Set(files.map((f) => f.path.split("/").slice(0, -1).join("/")).filter((d) => d));
  for (const d of dirs) fsyncPath(join(root, d));
}

type LegacyFile = { path: string };

/** A backup without a manifest: queue.db and spool/<id>. */
function legacyFiles(backupPath: string): LegacyFile[] {
  const spool = plainEntry(join(backupPath, "spool")) === "dir" ? readdirSync(join(backupPath, "spool")) : [];
  return [{ path: "queue.db" }, ...spool.map((id) => ({ path: `spool/${id}` }))];
}

function emptyDir(path: string): boolean {
  try {
    return plainEntry(path) === "dir" && readdirSync(path).length === 0;
  } catch {
    return false;
  }
}

function configNote(backupPath: string, hasManifest: boolean, current: string | null): RestoreResult["config"] {
  const copy = join(backupPath, "config", "mailraven.yaml");
  if (!hasManifest || plainEntry(copy) !== "file") return { copy: null, same_as_current: null };
  let same: boolean | null = null;
  try {
    if (current) same = hashFileSafe(copy).sha256 === new Bun.CryptoHasher("sha256").update(readFileSync(current)).digest("hex");
  } catch {
    same = null;
  }
  return { copy, same_as_current: same };
}
