// A whole-service backup under a new directory of backup.dir: the queue, policy.db, the DKIM
// keys, the ACME directory and the configuration (sources.ts), described by a manifest
// (manifest.ts), fsynced, and given its final, unique name only when complete. Runs in its own
// process (`mailraven backup --offline`, or spawned by the admin API) so the relay's event
// loop never waits on it.

import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/types.ts";
import { fsyncPath } from "../fsync.ts";
import { FORMAT, MANIFEST, type Manifest, type ManifestFile } from "./manifest.ts";
import { makeDir, plainEntry, UnsafePathError } from "./safe-fs.ts";
import { copyConfig, copyTree, snapshotPolicy, snapshotQueue } from "./sources.ts";

export interface BackupResult {
  readonly path: string;
  /** The queue database of the backup, its size and sha256 (as before manifests existed). */
  readonly database: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly messages: number;
  readonly spool_files: number;
  readonly duration_ms: number;
  readonly removed_old: readonly string[];
  readonly manifest: Manifest;
}

export interface BackupOptions {
  readonly config: Config;
  /** The configuration file to copy; null when the relay runs on the embedded configuration. */
  readonly configPath: string | null;
  readonly version: string;
  readonly now?: Date;
}

export const PREFIX = "mailraven-";

/**
 * A backup that cannot be made, for a reason the operator can act on. `publicMessage` is what
 * the admin API may say (no paths); `message` has the details for the log and the terminal.
 */
export class BackupError extends Error {
  constructor(message: string, readonly code: string, readonly publicMessage: string) {
    super(message);
  }
}

export function backupName(now: Date): string {
  return PREFIX + now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

export async function createBackup(opts: BackupOptions): Promise<BackupResult> {
  const started = performance.now();
  const now = opts.now ?? new Date();
  const { stateDir, backup } = opts.config;
  if (plainEntry(join(stateDir, "queue.db")) === undefined) {
    throw new BackupError(`no queue database in ${stateDir}: mailraven has not run with this state_dir yet, so there is nothing to back up`, "no_queue", "mailraven has not run with this state_dir yet: there is nothing to back up");
  }
  const partial = join(backup.dir, `.partial-${backupName(now)}-${process.pid}`);
  try {
    // backup.dir itself may be a symlink an admin made (to a larger disk); what is inside is ours.
    mkdirSync(backup.dir, { recursive: true, mode: 0o700 });
    removeAbandoned(backup.dir);
    rmSync(partial, { recursive: true, force: true });
    makeDir(partial);
    const queue = snapshotQueue(stateDir, partial);
    const policy = snapshotPolicy(stateDir, partial);
    const dkim = copyTree(opts.config.outbound.dkimDir, partial, "dkim");
    const acmeDir = opts.config.acme?.dir ?? join(stateDir, "acme");
    const acme = copyTree(acmeDir, partial, "acme");
    const config = opts.configPath ? copyConfig(opts.configPath, partial, backup.includeSecrets) : null;
    const files: ManifestFile[] = [...queue.files, ...(policy?.files ?? []), ...(dkim ?? []), ...(acme ?? []), ...(config?.files ?? [])];
    const manifest: Manifest = {
      format: FORMAT,
      version: opts.version,
      created_at: now.toISOString(),
      hostname: opts.config.hostname,
      state_dir: stateDir,
      duration_ms: 0,
      components: {
        queue: { messages: queue.messages, spool_files: queue.spoolFiles, schema: queue.schema },
        policy: policy ? { greylist: policy.greylist, blocklist: policy.blocklist } : null,
        dkim: dkim ? { source: opts.config.outbound.dkimDir, domains: [...new Set(dkim.map((f) => f.path.split("/")[1]!))].sort() } : null,
        acme: acme ? { source: acmeDir, files: acme.length } : null,
        config: { source: opts.configPath, include_secrets: backup.includeSecrets, copied: config?.copied ?? [] },
      },
      left_out: config?.leftOut ?? [],
      files,
    };
    const done = { ...manifest, duration_ms: Math.round(performance.now() - started) };
    writeFileSync(join(partial, MANIFEST), `${JSON.stringify(done, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    for (const dir of ["spool", "dkim", "acme", "config", "config/files"]) if (plainEntry(join(partial, dir)) === "dir") syncTree(partial, dir, files);
    fsyncPath(join(partial, MANIFEST));
    fsyncPath(partial);
    const final = publish(partial, backup.dir, backupName(now));
    fsyncPath(backup.dir);
    const db = queue.files[0]!;
    return {
      path: final,
      database: join(final, "queue.db"),
      bytes: db.size,
      sha256: db.sha256,
      messages: queue.messages,
      spool_files: queue.spoolFiles,
      duration_ms: done.duration_ms,
      removed_old: prune(backup.dir, backup.keep),
      manifest: done,
    };
  } catch (err) {
    try {
      rmSync(partial, { recursive: true, force: true });
    } catch {
      // backup.dir is unusable (the reason is in err): nothing of ours is there
    }
    throw classify(err);
  }
}

/** Directories of the copy are fsynced so the names of the files in them are durable. */
function syncTree(root: string, dir: string, files: readonly ManifestFile[]): void {
  const dirs = new Set([dir, ...files.filter((f) => f.path.startsWith(`${dir}/`)).map((f) => f.path.slice(0, f.path.lastIndexOf("/")))]);
  for (const d of dirs) fsyncPath(join(root, d));
}

/**
 * The final name: the UTC second, and when another backup already has it (two backups within
 * one second), -02, -03...: rename() never replaces a non-empty directory, so the name is
 * taken atomically and no backup overwrites another. Two digits keep the names in time order.
 */
function publish(partial: string, dir: string, base: string): string {
  for (let n = 1; n < 100; n++) {
    const final = join(dir, n === 1 ? base : `${base}-${String(n).padStart(2, "0")}`);
    try {
      renameSync(partial, final);
      return final;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
    }
  }
  throw new BackupError(`${dir}: 99 backups already carry the name ${base}`, "busy", "too many backups within one second");
}

/** Partial backups left by a backup process that was killed (its pid is gone). */
function removeAbandoned(backupDir: string): void {
  for (const name of readdirSync(backupDir)) {
    const pid = Number(/^\.partial-.*-(\d+)$/.exec(name)?.[1]);
    if (!pid) continue;
    try {
      process.kill(pid, 0);
    } catch {
      rmSync(join(backupDir, name), { recursive: true, force: true });
    }
  }
}

/** Keeps the newest `keep` backups (names sort by time). */
function prune(backupDir: string, keep: number): string[] {
  const all = readdirSync(backupDir).filter((n) => n.startsWith(PREFIX)).sort();
  const old = all.slice(0, Math.max(0, all.length - keep));
  for (const n of old) rmSync(join(backupDir, n), { recursive: true, force: true });
  return old;
}

/** Every failure becomes a BackupError whose public message names no path. */
function classify(err: unknown): BackupError {
  if (err instanceof BackupError) return err;
  const message = (err as Error).message ?? String(err);
  if (err instanceof UnsafePathError) return new BackupError(message, "unsafe_path", "a symbolic link or special file was refused; see the log");
  const code = (err as NodeJS.ErrnoException).code ?? /\b(ENOSPC|EDQUOT|EACCES|EPERM|EROFS|ENOENT)\b/.exec(message)?.[1];
  if (code === "ENOSPC" || code === "EDQUOT" || /SQLITE_FULL|database or disk is full/.test(message)) return new BackupError(message, "no_space", "no space left where backups are written (backup.dir)");
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") return new BackupError(message, "permission", "permission denied reading the state directory or writing backup.dir; see the log");
  return new BackupError(message, "failed", "the backup failed; see the log (journalctl -u mailraven -p err)");
}
