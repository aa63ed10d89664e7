// `mailraven user` and `mailraven apikey` write straight to queue.db. Run as root (sudo) on a
// state directory the service account owns, they become that account first: every file they
// leave (queue.db and SQLite's -wal and -shm) is the service account's, so the relay can still
// open them; and a symlink the service account planted in queue.db's place is refused, not
// followed by root. Needs root; prints why it skips otherwise.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BINARY, tempDir } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";

const SERVICE = 65534;
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn("cli-privileges: skipped, the privilege drop needs root (CI runs as root)");

let host: string;
let state: string;
let config: string;

/** The owner of every entry in the state directory, by name. */
const owners = (): Record<string, number> => Object.fromEntries(readdirSync(state).map((n) => [n, lstatSync(join(state, n)).uid]));

beforeAll(() => {
  if (!isRoot) return;
  host = tempDir("mailraven-cli-priv-");
  chmodSync(host, 0o755);
  state = join(host, "state");
  mkdirSync(state, { mode: 0o700 });
  chownSync(state, SERVICE, SERVICE);
  config = join(host, "mailraven.yaml");
  writeFileSync(config, `hostname: relay.test\nstate_dir: ${state}\n`, { mode: 0o644 });
});

afterAll(() => {
  if (isRoot) rmSync(host, { recursive: true, force: true });
});

describe.skipIf(!isRoot)("root-run user and apikey commands (run as root)", () => {
  test("user add, and apikey add, each on a fresh state directory: queue.db and its -wal/-shm belong to the service account", async () => {
    const r = await run([BINARY, "user", "add", "alice", "--identity", "alice@corp.test", "--password-stdin", "--config", config], "a long enough password 123\n");
    expect(r.code).toBe(0);
    expect(r.out).toContain("user alice added");
    expect(Object.keys(owners())).toContain("queue.db");
    expect(Object.entries(owners()).filter(([, uid]) => uid !== SERVICE)).toEqual([]);

    const other = join(host, "other");
    mkdirSync(other, { mode: 0o700 });
    chownSync(other, SERVICE, SERVICE);
    const otherConfig = join(host, "other.yaml");
    writeFileSync(otherConfig, `hostname: relay.test\nstate_dir: ${other}\n`, { mode: 0o644 });
    expect((await run([BINARY, "apikey", "add", "app0", "--domain", "corp.test", "--config", otherConfig])).code).toBe(0);
    expect(readdirSync(other)).toContain("queue.db");
    expect(readdirSync(other).filter((n) => lstatSync(join(other, n)).uid !== SERVICE)).toEqual([]);
  });

  test("apikey add and user ls afterwards: still nothing of root's in the state directory", async () => {
    const add = await run([BINARY, "apikey", "add", "app", "--domain", "corp.test", "--json", "--config", config]);
    expect(add.code).toBe(0);
    expect((JSON.parse(add.out) as { token: string }).token.length).toBeGreaterThan(20);
    const ls = await run([BINARY, "user", "ls", "--json", "--config", config]);
    expect(ls.code).toBe(0);
    expect((JSON.parse(ls.out) as { name: string }[]).map((u) => u.name)).toEqual(["alice"]);
    expect(Object.entries(owners()).filter(([, uid]) => uid !== SERVICE)).toEqual([]);
  });

  test("a symlink in queue.db's place is refused with exit 1, and root's file it points at is untouched", async () => {
    const victim = join(host, "root-owned.db");
    writeFileSync(victim, "root's data\n", { mode: 0o644 });
    rmSync(join(state, "queue.db"));
    for (const n of ["queue.db-wal", "queue.db-shm"]) rmSync(join(state, n), { force: true });
    symlinkSync(victim, join(state, "queue.db"));
    for (const cmd of [["user", "add", "mallory", "--identity", "m@corp.test", "--password-stdin"], ["apikey", "add", "evil", "--domain", "corp.test"]]) {
      const r = await run([BINARY, ...cmd, "--config", config], "a long enough password 123\n");
      expect(r.code).toBe(1);
      expect(r.err).toContain("is a symbolic link; refusing to follow it");
    }
    expect(readFileSync(victim, "utf8")).toBe("root's data\n");
    const st = statSync(victim);
    expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o644]);
    expect(readdirSync(host).filter((n) => n.startsWith("root-owned.db-"))).toEqual([]);
  });
});
