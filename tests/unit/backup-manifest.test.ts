// The manifest is read from a directory the service account can write: an entry that points
// outside the backup, or a manifest of another format, is refused before any file is touched.

import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { componentOf, readManifest, safeRelative } from "../../src/backup/manifest.ts";
import { verifyBackup } from "../../src/backup/verify.ts";

const dir = mkdtempSync(join(tmpdir(), "mailraven-manifest-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const manifest = (files: unknown[]) => ({ format: "mailraven-backup/1", version: "0", created_at: "2026-11-29T00:00:00.000Z", components: { queue: { messages: 0 } }, left_out: [], files });

test("paths that leave the backup, or belong to no component, are refused", () => {
  for (const bad of ["../etc/passwd", "/etc/passwd", "dkim/../../x", "spool//x", "spool/./x", "etc/passwd", "manifest.json", ""]) {
    const d = join(dir, `bad-${Math.random().toString(36).slice(2)}`);
    mkdirSync(d);
    writeFileSync(join(d, "manifest.json"), JSON.stringify(manifest([{ path: bad, size: 1, sha256: "0".repeat(64), mode: "0600" }])));
    expect(() => readManifest(d)).toThrow(/unusable entry/);
    expect(verifyBackup(d).problems.join("\n")).toMatch(/unusable entry/);
  }
  expect(safeRelative("spool/1M8JQX4WZTG1E8Z7")).toBe(true);
  expect(componentOf("config/files/admin.token_file")).toBe("config");
  expect(componentOf("acme/certificate.key")).toBe("acme");
});

test("another format, or no manifest and no queue, is not a mailraven backup", () => {
  const other = join(dir, "other");
  mkdirSync(other);
  writeFileSync(join(other, "manifest.json"), JSON.stringify({ ...manifest([]), format: "something-else/2" }));
  expect(verifyBackup(other).problems).toEqual([`${join(other, "manifest.json")} is not a mailraven backup manifest (expected format mailraven-backup/1)`]);
  const empty = join(dir, "empty");
  mkdirSync(empty);
  expect(verifyBackup(empty).problems).toEqual([`${empty} is not a mailraven backup: no manifest.json and no queue.db in it`]);
  expect(verifyBackup(join(dir, "nowhere")).problems).toEqual([`${join(dir, "nowhere")}: no such backup directory`]);
});

test("a manifest that is a symlink is refused, not followed", () => {
  const d = join(dir, "linked");
  mkdirSync(d);
  writeFileSync(join(dir, "elsewhere.json"), JSON.stringify(manifest([])));
  symlinkSync(join(dir, "elsewhere.json"), join(d, "manifest.json"));
  expect(verifyBackup(d).problems.join("\n")).toContain("is a symbolic link; refusing to follow it");
});
