// `mailraven restore` and `backup` run as root (scripts/restore.sh, cron) against directories
// the service account owns. The service account (here uid 65534, "nobody") plants symlinks in
// the state directory and in a backup; root must neither write through them (a root-owned file
// overwritten or chowned) nor read through them (a root-only file copied into the spool), and
// every file the commands write belongs to the state directory's owner. Needs root; prints why
// it skips otherwise.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BINARY, Relay, tempDir } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const SERVICE = 65534;
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn("backup-safety: skipped, the privilege drop and the symlink attacks need root (CI runs as root)");

let host: string;
let state: string;
let config: string;
let backup: string;
/** A directory of the service account's own, where it keeps what it moved out of the way. */
let stash: string;
let sink: Sink;

/** What the service account can do: run a command as uid/gid 65534. */
const asService = (cmd: string[]) => {
  const r = Bun.spawnSync(cmd, { uid: SERVICE, gid: SERVICE, stdout: "pipe", stderr: "pipe" } as Parameters<typeof Bun.spawnSync>[1]);
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} as the service user: ${r.stderr?.toString()}`);
};

/** A root-owned file the attacker wants written to, and a root-only one it wants to read. */
function rootFiles() {
  const victim = join(host, "root-owned.conf");
  const secret = join(host, "root-only.key");
  writeFileSync(victim, "root's configuration\n", { mode: 0o644 });
  writeFileSync(secret, "TOP SECRET root key material\n", { mode: 0o600 });
  return { victim, secret };
}

function unchanged(victim: string): void {
  const st = statSync(victim);
  expect(readFileSync(victim, "utf8")).toBe("root's configuration\n");
  expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o644]);
}

function chownTree(path: string): void {
  chownSync(path, SERVICE, SERVICE);
  if (lstatSync(path).isDirectory()) for (const n of readdirSync(path)) chownTree(join(path, n));
}

const ownersUnder = (path: string): Set<number> => {
  const out = new Set<number>([lstatSync(path).uid]);
  if (lstatSync(path).isDirectory()) for (const n of readdirSync(path)) for (const u of ownersUnder(join(path, n))) out.add(u);
  return out;
};

/** Whether any file under the restored state (not the backups kept there) holds `text`; symlinks are not followed. */
function restoredStateHolds(text: string): boolean {
  const walk = (p: string): boolean => {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (!st || st.isSymbolicLink()) return false;
    if (st.isDirectory()) return readdirSync(p).some((n) => walk(join(p, n)));
    return readFileSync(p, "utf8").includes(text);
  };
  return readdirSync(state).filter((n) => n !== "backups").some((n) => walk(join(state, n)));
}

beforeAll(async () => {
  if (!isRoot) return;
  host = tempDir("mailraven-safety-");
  chmodSync(host, 0o755);
  stash = join(host, "stash");
  mkdirSync(stash, { mode: 0o700 });
  chownSync(stash, SERVICE, SERVICE);
  sink = await Sink.start({ rcpt: () => ({ code: 451, message: "4.3.0 later" }) });
  // A relay with queued mail, two bodies in spool files, and DKIM keys.
  const relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["1h"], inline_max_size: "1KiB" } }, dir: host });
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO safety.test");
  for (let i = 0; i < 3; i++) expect((await talk.transaction("a@origin.test", ["bob@dest.test"], `Subject: ${i}\r\n\r\n${"y".repeat(i === 0 ? 10 : 4000)}\r\n`)).code).toBe(250);
  talk.close();
  await relay.stop();
  config = relay.configPath;
  state = join(host, "state");
  expect((await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--config", config])).code).toBe(0);
  chownTree(state);
  chmodSync(state, 0o700);
  const made = await run([BINARY, "backup", "--offline", "--json", "--config", config]);
  expect(made.err).toBe("");
  backup = (JSON.parse(made.out) as { path: string }).path;
}, 60_000);

afterAll(async () => {
  await sink?.close();
  if (host) rmSync(host, { recursive: true, force: true });
});

describe.skipIf(!isRoot)("backup and restore run as root", () => {
  test("backup --offline as root writes every file as the state directory's owner", () => {
    expect(ownersUnder(backup)).toEqual(new Set([SERVICE]));
    expect(readdirSync(join(backup, "spool")).length).toBe(2);
  }, 60_000);

  test("restore as root drops to the owner: the restored state is the owner's, nothing is chowned", async () => {
    const r = await run([BINARY, "restore", backup, "--force", "--json", "--config", config]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out) as { components: string[]; messages: number; previous_state_kept_in: string };
    expect(result.components).toEqual(["queue", "policy", "dkim"]);
    expect(result.messages).toBe(3);
    for (const name of ["queue.db", "policy.db", "spool", "dkim", result.previous_state_kept_in.slice(state.length + 1)]) {
      expect({ name, owners: [...ownersUnder(join(state, name))] }).toEqual({ name, owners: [SERVICE] });
    }
  }, 60_000);

  test("a symlink the service account put in the state directory is refused; the root file it points at is untouched", async () => {
    const { victim } = rootFiles();
    // queue.db -> a root-owned file; spool -> a root-owned directory.
    const rootDir = join(host, "root-dir");
    mkdirSync(rootDir, { recursive: true, mode: 0o755 });
    writeFileSync(join(rootDir, "keep"), "root's\n", { mode: 0o644 });
    asService(["mv", join(state, "queue.db"), join(state, "queue.db.real")]);
    asService(["ln", "-s", victim, join(state, "queue.db")]);
    const r = await run([BINARY, "restore", backup, "--force", "--config", config]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(state, "queue.db")} is a symbolic link; refusing to follow it`);
    unchanged(victim);
    expect(lstatSync(join(state, "queue.db")).isSymbolicLink()).toBe(true);

    asService(["rm", join(state, "queue.db")]);
    asService(["mv", join(state, "queue.db.real"), join(state, "queue.db")]);
    asService(["mv", join(state, "spool"), join(state, "spool.real")]);
    asService(["ln", "-s", rootDir, join(state, "spool")]);
    const r2 = await run([BINARY, "restore", backup, "--force", "--only", "queue", "--config", config]);
    expect(r2.code).toBe(1);
    expect(r2.err).toContain("is a symbolic link");
    expect(readdirSync(rootDir)).toEqual(["keep"]);
    expect(statSync(rootDir).uid).toBe(0);
    asService(["rm", join(state, "spool")]);
    asService(["mv", join(state, "spool.real"), join(state, "spool")]);
  }, 60_000);

  test("a symlink in the backup to a root-only file is refused, with or without its manifest; nothing of it reaches the spool", async () => {
    const { secret } = rootFiles();
    const spool = join(backup, "spool");
    const id = readdirSync(spool)[0]!;
    asService(["mv", join(spool, id), join(stash, "saved-body")]);
    asService(["ln", "-s", secret, join(spool, id)]);
    const r = await run([BINARY, "restore", backup, "--force", "--config", config]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(spool, id)} is a symbolic link`);
    const verify = await run([BINARY, "backup", "--verify", backup, "--config", config]);
    expect(verify.code).toBe(1);
    expect(verify.out).toContain("is a symbolic link");

    // Without the manifest (the format before manifests: queue only, no checksums) the same.
    asService(["mv", join(backup, "manifest.json"), join(stash, "saved-manifest")]);
    const legacy = await run([BINARY, "restore", backup, "--force", "--config", config]);
    expect(legacy.code).toBe(1);
    expect(legacy.err).toContain("is a symbolic link");
    expect(restoredStateHolds("TOP SECRET")).toBe(false);

    // A symlinked directory in the backup (dkim -> somewhere root keeps keys) is refused as well.
    asService(["rm", join(spool, id)]);
    asService(["mv", join(stash, "saved-body"), join(spool, id)]);
    asService(["mv", join(stash, "saved-manifest"), join(backup, "manifest.json")]);
    const keys = join(host, "root-keys");
    mkdirSync(join(keys, "corp.test"), { recursive: true, mode: 0o700 });
    writeFileSync(join(keys, "corp.test", "selector"), "TOP SECRET\n", { mode: 0o600 });
    asService(["mv", join(backup, "dkim"), join(stash, "saved-dkim")]);
    asService(["ln", "-s", keys, join(backup, "dkim")]);
    const dir = await run([BINARY, "restore", backup, "--force", "--only", "dkim", "--config", config]);
    expect(dir.code).toBe(1);
    expect(dir.err).toContain(`${join(backup, "dkim")} is a symbolic link`);
    expect(restoredStateHolds("TOP SECRET")).toBe(false);
    asService(["rm", join(backup, "dkim")]);
    asService(["mv", join(stash, "saved-dkim"), join(backup, "dkim")]);

    // Put back, the backup is good again and restores.
    expect((await run([BINARY, "backup", "--verify", backup, "--config", config])).code).toBe(0);
    expect((await run([BINARY, "restore", backup, "--force", "--config", config])).code).toBe(0);
  }, 60_000);

  test("a backup the service account swapped for a symlink to a root-owned directory is not read as root", async () => {
    const fake = join(host, "root-backup");
    mkdirSync(fake, { mode: 0o700 });
    writeFileSync(join(fake, "queue.db"), "root only\n", { mode: 0o600 });
    const link = join(host, "backups-link");
    symlinkSync(fake, link);
    // Following the top-level argument is the admin's choice; as the owner the files in it cannot be read.
    const r = await run([BINARY, "restore", link, "--force", "--config", config]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/EACCES|permission denied/i);
    renameSync(link, `${link}.gone`);
  }, 60_000);

  test("dkim keygen run as root makes the keys as the state directory's owner (no chown, no root-owned key)", async () => {
    const r = await run([BINARY, "dkim", "keygen", "owned.test", "--selector", "s2", "--config", config]);
    expect(r.code).toBe(0);
    const domainDir = join(state, "dkim", "owned.test");
    expect(ownersUnder(domainDir)).toEqual(new Set([SERVICE]));
    expect(statSync(domainDir).mode & 0o777).toBe(0o700);
    for (const f of ["s2.rsa.pem", "s2.ed25519.pem", "selector"]) expect(statSync(join(domainDir, f)).mode & 0o777).toBe(0o600);
  }, 60_000);
});
