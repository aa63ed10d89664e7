// File access for commands an admin may run as root on directories the service user controls
// (backup, restore, dkim): drop to that user first, then never follow a symlink and never
// touch anything but plain files and directories. The service account can plant a symlink in
// the state directory or in a backup; followed by root, it would overwrite or chown a root
// file, or copy a root-only file into the spool. After the drop the kernel refuses such a
// thing anyway; O_NOFOLLOW and the lstat checks make the refusal explicit and early.

import { closeSync, constants, existsSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

/** A file or directory refused for safety (a symlink, a device, a path that escapes). */
export class UnsafePathError extends Error {}

export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Run as root, become the owner of `dir`, or of its nearest existing parent on a fresh host
 * (supplementary groups dropped, then gid, then uid: after setuid there is no way back).
 * Returns who we are now, or null when nothing changed (not root, or the directory is root's
 * own). glibc applies set*id to every thread of the process.
 */
export function dropToOwnerOf(dir: string, ownerOfSymlink = false): Owner | null {
  if (process.getuid?.() !== 0) return null;
  let existing = dir;
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  // ownerOfSymlink: a symlink someone put in place of `dir` makes us its owner, not the target's.
  const st = ownerOfSymlink ? lstatSync(existing) : statSync(existing);
  if (st.uid === 0) return null;
  process.setgroups?.([]);
  process.setgid!(st.gid);
  process.setuid!(st.uid);
  if (process.getuid() !== st.uid || process.geteuid?.() !== st.uid) throw new Error(`could not drop privileges to uid ${st.uid}`);
  return { uid: st.uid, gid: st.gid };
}

/** lstat that refuses symlinks and anything but a file or directory; undefined when absent. */
export function plainEntry(path: string): "file" | "dir" | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return undefined;
  if (st.isSymbolicLink()) throw new UnsafePathError(`${path} is a symbolic link; refusing to follow it (remove it, or replace it with the real file)`);
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  throw new UnsafePathError(`${path} is neither a regular file nor a directory; refusing to use it`);
}

export interface TreeEntry {
  /** Relative to the root, with "/" separators. */
  readonly path: string;
  readonly kind: "file" | "dir";
  readonly mode: number;
}

/** Every file and directory below `root` (depth first, parents before children), refusing symlinks. */
export function walkTree(root: string, prefix = ""): TreeEntry[] {
  const out: TreeEntry[] = [];
  for (const name of readdirSync(join(root, prefix)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const full = join(root, rel);
    const kind = plainEntry(full)!;
    out.push({ path: rel, kind, mode: lstatSync(full).mode & 0o7777 });
    if (kind === "dir") out.push(...walkTree(root, rel));
  }
  return out;
}

export interface Copied {
  readonly size: number;
  readonly sha256: string;
}

const CHUNK = 1 << 20;

/**
 * Copies a regular file without following a symlink at either end (`followSource` allows one
 * at the source, for files the configuration names); the target must not exist (O_EXCL).
 * Hashes while copying and fsyncs the copy. `mode` is masked to at most 0755.
 */
export function copyFileSafe(from: string, to: string, mode: number, followSource = false): Copied {
  const src = followSource ? openSync(from, constants.O_RDONLY | constants.O_NONBLOCK) : openReadNoFollow(from);
  try {
    if (!fstatSync(src).isFile()) throw new UnsafePathError(`${from} is not a regular file; refusing to copy it`);
    const dst = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode & 0o755);
    try {
      const hasher = new Bun.CryptoHasher("sha256");
      const buf = Buffer.allocUnsafe(CHUNK);
      let size = 0;
      for (let n; (n = readSync(src, buf, 0, CHUNK, null)) > 0; size += n) {
        hasher.update(buf.subarray(0, n));
        for (let off = 0; off < n; ) off += writeSync(dst, buf, off, n - off);
      }
      fsyncSync(dst);
      return { size, sha256: hasher.digest("hex") };
    } finally {
      closeSync(dst);
    }
  } catch (err) {
    throw refusal(err, to);
  } finally {
    closeSync(src);
  }
}

/** Size and sha256 of a regular file, read without following a symlink. */
export function hashFileSafe(path: string): Copied {
  const fd = openReadNoFollow(path);
  try {
    if (!fstatSync(fd).isFile()) throw new UnsafePathError(`${path} is not a regular file`);
    const hasher = new Bun.CryptoHasher("sha256");
    const buf = Buffer.allocUnsafe(CHUNK);
    let size = 0;
    for (let n; (n = readSync(fd, buf, 0, CHUNK, null)) > 0; size += n) hasher.update(buf.subarray(0, n));
    return { size, sha256: hasher.digest("hex") };
  } finally {
    closeSync(fd);
  }
}

/** mkdir that refuses an existing symlink in its place (mkdir itself never follows one). */
export function makeDir(path: string, mode = 0o700): void {
  const kind = plainEntry(path);
  if (kind === "file") throw new UnsafePathError(`${path} is a file where a directory is expected`);
  if (!kind) mkdirSync(path, { mode });
}

/** O_NONBLOCK: a FIFO planted in place of a file must not hang the open; fstat then refuses it. */
function openReadNoFollow(path: string): number {
  try {
    return openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw refusal(err, path);
  }
}

/** O_NOFOLLOW on a symlink fails with ELOOP: say what happened in words. */
function refusal(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ELOOP" || code === "EMLINK" ? new UnsafePathError(`${path} is a symbolic link; refusing to follow it`) : err;
}
