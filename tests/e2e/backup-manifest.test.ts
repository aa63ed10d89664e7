// The whole-service backup as an operator sees it through the admin API and the command line:
// the manifest lists every file with the size and sha256 it really has, secrets named by *_file
// keys stay out unless asked for, `backup --verify` finds what was changed, added or removed,
// backups in the same second get names of their own, a failure is a JSON error without paths or
// stack, and the time of the last good backup is in /metrics from the first scrape after a restart.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import parsePrometheus from "parse-prometheus-text-format";
import { Database } from "bun:sqlite";
import { ADMIN_TOKEN, BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

interface Manifest {
  format: string;
  version: string;
  created_at: string;
  components: { queue: { messages: number }; policy: { greylist: number; blocklist: number } | null; dkim: { domains: string[] } | null; config: { copied: { key: string; path: string; as: string }[] } };
  left_out: { key: string; path: string; reason: string }[];
  files: { path: string; size: number; sha256: string; mode: string }[];
}
interface Answer {
  path: string;
  manifest: Manifest;
}

const sha256 = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
const cleanups: (() => unknown)[] = [];
let dir: string;
let cert: { cert_file: string; key_file: string };
let tokenFile: string;

async function lastBackupMetric(relay: Relay): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const family = parsePrometheus(text).find((f) => f.name === "mailraven_backup_last_success_timestamp_seconds");
  return Number(family?.metrics[0]?.value);
}

function relayConfig(extra: Record<string, unknown> = {}) {
  return {
    relay: { domains: { "dest.test": "smtp://127.0.0.1:9" } },
    submission: { starttls: [], tls: ["127.0.0.1:0"], certificates: [cert] },
    admin: { token: null, token_file: tokenFile },
    ...extra,
  };
}

beforeAll(async () => {
  dir = tempDir("mailraven-manifest-");
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cert = { cert_file: join(dir, "tls.pem"), key_file: join(dir, "tls.key") };
  expect((await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", cert.key_file, "-out", cert.cert_file, "-days", "2", "-subj", "/CN=mail.test"])).code).toBe(0);
  mkdirSync(join(dir, "a"));
  tokenFile = join(dir, "admin.token");
  writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
}, 30_000);

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 30_000);

describe("whole-service backup", () => {
  let relay: Relay;
  /** The relay of host "a" again with other settings (stopped first if a failed test left it running). */
  const restart = async (extra: Record<string, unknown> = {}) => {
    const previous = relay as Relay | undefined;
    if (previous && previous.proc.exitCode === null) await previous.stop();
    return Relay.start({ config: relayConfig(extra), dir: join(dir, "a") });
  };
  let first: Answer;

  test("POST /admin/backup answers with the manifest: every file with its real size and sha256, secrets left out and named", async () => {
    relay = await restart();
    cleanups.push(() => relay.cleanup());
    expect((await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--config", relay.configPath])).code).toBe(0);
    const block = await fetch(`http://127.0.0.1:${relay.adminPort}/admin/blocklist`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ cidr: "192.0.2.0/24", reason: "test" }) });
    expect(block.status).toBeLessThan(300);

    const res = await relay.admin("POST", "/admin/backup");
    expect(res.status).toBe(200);
    first = (await res.json()) as Answer;
    const m = first.manifest;
    expect(m.format).toBe("mailraven-backup/1");
    expect(m.version).toBe("0.1.0");
    expect(Math.abs(Date.parse(m.created_at) - Date.now())).toBeLessThan(60_000);
    expect(m.components.policy).toEqual({ greylist: 0, blocklist: 1 });
    expect(m.components.dkim?.domains).toEqual(["corp.test"]);
    const paths = m.files.map((f) => f.path).sort();
    expect(paths).toEqual(["config/files/submission.certificates[0].cert_file", "config/mailraven.yaml", "dkim/corp.test/s1.ed25519.pem", "dkim/corp.test/s1.rsa.pem", "dkim/corp.test/selector", "policy.db", "queue.db"]);
    for (const f of m.files) {
      expect({ path: f.path, size: f.size, sha256: f.sha256 }).toEqual({ path: f.path, size: Bun.file(join(first.path, f.path)).size, sha256: sha256(join(first.path, f.path)) });
    }
    expect(readFileSync(join(first.path, "config/mailraven.yaml"), "utf8")).toBe(readFileSync(relay.configPath, "utf8"));
    expect(readFileSync(join(first.path, "config/files/submission.certificates[0].cert_file"), "utf8")).toBe(readFileSync(cert.cert_file, "utf8"));
    expect(m.left_out.map((l) => [l.key, l.path]).sort()).toEqual([["admin.token_file", tokenFile], ["submission.certificates[0].key_file", cert.key_file]]);
    for (const l of m.left_out) expect(l.reason).toContain("backup.include_secrets: true");
    expect(JSON.stringify(m)).not.toContain("PRIVATE KEY");
    const manifestOnDisk = JSON.parse(readFileSync(join(first.path, "manifest.json"), "utf8")) as Manifest;
    expect(manifestOnDisk).toEqual(m);
  }, 60_000);

  test("backup --verify passes a good backup and names a changed byte, a missing file and an extra one", async () => {
    const good = await run([BINARY, "backup", "--verify", first.path, "--config", relay.configPath]);
    expect(good.code).toBe(0);
    expect(good.out).toContain("good: 7 files");
    const copy = join(dir, "tampered");
    expect((await run(["cp", "-a", first.path, copy])).code).toBe(0);
    const key = join(copy, "dkim/corp.test/s1.rsa.pem");
    writeFileSync(key, readFileSync(key, "utf8").replace(/[A-Za-z](?=[A-Za-z0-9+/]{40}\n)/, (c) => (c === "A" ? "B" : "A")));
    unlinkSync(join(copy, "dkim/corp.test/selector"));
    appendFileSync(join(copy, "planted.pem"), "not from the relay\n");
    const bad = await run([BINARY, "backup", "--verify", copy, "--json", "--config", relay.configPath]);
    expect(bad.code).toBe(1);
    const report = JSON.parse(bad.out) as { ok: boolean; problems: string[] };
    expect(report.ok).toBe(false);
    expect(report.problems.sort()).toEqual([
      expect.stringMatching(/^dkim\/corp\.test\/s1\.rsa\.pem differs from the manifest/),
      "dkim/corp.test/selector is missing",
      "planted.pem is not in the manifest",
    ].sort() as never);
    const elsewhere = join(dir, "elsewhere.yaml");
    writeFileSync(elsewhere, JSON.stringify({ ...JSON.parse(readFileSync(relay.configPath, "utf8")), state_dir: join(dir, "elsewhere") }));
    const restore = await run([BINARY, "restore", copy, "--config", elsewhere]);
    expect(restore.code).toBe(1);
    expect(restore.err).toContain("cannot be restored");
  }, 60_000);

  test("include_secrets: true copies the files of key_file and token_file; nothing is left out", async () => {
    relay = await restart({ backup: { include_secrets: true } });
    const res = await relay.admin("POST", "/admin/backup");
    expect(res.status).toBe(200);
    const { path, manifest } = (await res.json()) as Answer;
    expect(manifest.left_out).toEqual([]);
    const copied = Object.fromEntries(manifest.components.config.copied.map((c) => [c.key, c]));
    expect(Object.keys(copied).sort()).toEqual(["admin.token_file", "submission.certificates[0].cert_file", "submission.certificates[0].key_file"]);
    expect(readFileSync(join(path, copied["submission.certificates[0].key_file"]!.as))).toEqual(readFileSync(cert.key_file));
    expect(readFileSync(join(path, copied["admin.token_file"]!.as), "utf8")).toBe(`${ADMIN_TOKEN}\n`);
  }, 60_000);

  test("two backups within one second get names of their own (no ENOTEMPTY), and so do concurrent offline ones", async () => {
    relay = await restart({ backup: { keep: 100 } });
    // Backups that already hold the names of the next few seconds: every new backup collides.
    const backups = join(relay.dir, "state", "backups");
    const now = Math.floor(Date.now() / 1000);
    const taken: string[] = [];
    for (let s = 0; s < 20; s++) {
      const name = `mailraven-${new Date((now + s) * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}`;
      mkdirSync(join(backups, name), { recursive: true });
      writeFileSync(join(backups, name, "queue.db"), "");
      taken.push(name);
    }
    try {
      const a = await relay.admin("POST", "/admin/backup");
      const b = await relay.admin("POST", "/admin/backup");
      const offline = await Promise.all([1, 2, 3].map(() => run([BINARY, "backup", "--offline", "--json", "--config", relay.configPath])));
      expect({ codes: [a.status, b.status, ...offline.map((o) => o.code)], errors: offline.map((o) => o.err) }).toEqual({ codes: [200, 200, 0, 0, 0], errors: ["", "", ""] });
      const names = [((await a.json()) as Answer).path, ((await b.json()) as Answer).path, ...offline.map((o) => (JSON.parse(o.out) as Answer).path)].map((p) => p.slice(backups.length + 1));
      expect(new Set(names).size).toBe(5);
      for (const n of names) expect(n).toMatch(/^mailraven-\d{8}T\d{6}Z-\d\d$/);
      for (const n of names) expect(taken).toContain(n.slice(0, -3));
      for (const n of names) expect((await run([BINARY, "backup", "--verify", join(backups, n), "--config", relay.configPath])).code).toBe(0);
    } finally {
      for (const t of taken) rmSync(join(backups, t), { recursive: true, force: true });
    }
  }, 60_000);

  test("a failed backup is a JSON error with neither a path nor a stack trace; the details go to the log", async () => {
    const blocked = join(dir, "not-a-directory");
    writeFileSync(blocked, "a file where backup.dir should be\n");
    relay = await restart({ backup: { dir: blocked } });
    const res = await relay.admin("POST", "/admin/backup");
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("backup_failed");
    expect(body.error.message).toStartWith("backup failed: ");
    expect(body.error.message).not.toContain("/");
    expect(body.error.message).not.toMatch(/\bat\s|ENOTDIR|EEXIST|\n/);
    const logged = await relay.waitForLog((l) => l.msg === "backup failed");
    expect(String(logged.error)).toContain(blocked);
    await relay.stop();
    rmSync(blocked);
  }, 60_000);

  test("the time of the last good backup is in /metrics after a restart, read from the newest good manifest", async () => {
    relay = await restart({ backup: { keep: 3 } });
    const res = await relay.admin("POST", "/admin/backup");
    const { path, manifest } = (await res.json()) as Answer;
    const made = Date.parse(manifest.created_at) / 1000;
    expect(await lastBackupMetric(relay)).toBeCloseTo(made, 3);
    relay = await restart({ backup: { keep: 3 } });
    expect(await lastBackupMetric(relay)).toBeCloseTo(made, 3);

    // A newest backup whose manifest is unreadable is not a good one: the one before counts.
    const older = (await run([BINARY, "backup", "--offline", "--json", "--config", relay.configPath])).out;
    void older;
    renameSync(join(path, "manifest.json"), join(path, "manifest.json.gone"));
    const newer = JSON.parse((await run([BINARY, "backup", "--offline", "--json", "--config", relay.configPath])).out) as Answer;
    writeFileSync(join(newer.path, "manifest.json"), "{ truncated");
    relay = await restart({ backup: { keep: 3 } });
    const expected = Date.parse((JSON.parse(older) as Answer).manifest.created_at) / 1000;
    expect(await lastBackupMetric(relay)).toBeCloseTo(expected, 3);
    await relay.stop();
  }, 60_000);

  test("a backup whose queue.db has an older schema is restored as it is, and the relay migrates it at start and delivers", async () => {
    const sink = await Sink.start();
    cleanups.push(() => sink.close());
    mkdirSync(join(dir, "old"));
    const old = await Relay.start({ config: { relay: { domains: { "dest.test": "smtp://127.0.0.1:9" } }, queue: { retry_schedule: ["1h"] } }, dir: join(dir, "old") });
    cleanups.push(() => old.cleanup());
    const { talk } = await SmtpTalk.open(old.port);
    await talk.send("EHLO old.test");
    expect((await talk.transaction("a@origin.test", ["bob@dest.test"], "Subject: from schema 0\r\n\r\nkept across versions\r\n")).code).toBe(250);
    talk.close();
    const made = (await (await old.admin("POST", "/admin/backup")).json()) as Answer;
    await old.stop();

    // Rewrite the copy the way mailraven 0.0 stored it: no head column, the whole message in body.
    const file = join(made.path, "queue.db");
    const db = new Database(file);
    db.run("PRAGMA foreign_keys = OFF");
    db.run("CREATE TABLE m0 (id TEXT PRIMARY KEY, sender TEXT NOT NULL, size INTEGER NOT NULL, received_at INTEGER NOT NULL, client_ip TEXT NOT NULL, body BLOB) STRICT");
    db.run("INSERT INTO m0 SELECT id, sender, size, received_at, client_ip, CAST(head || body AS BLOB) FROM messages");
    db.run("DROP TABLE messages");
    db.run("ALTER TABLE m0 RENAME TO messages");
    db.run("PRAGMA user_version = 0");
    db.close();
    const manifest = JSON.parse(readFileSync(join(made.path, "manifest.json"), "utf8")) as Manifest;
    const entry = manifest.files.find((f) => f.path === "queue.db")!;
    Object.assign(entry, { size: Bun.file(file).size, sha256: sha256(file) });
    writeFileSync(join(made.path, "manifest.json"), JSON.stringify(manifest));

    const fresh = join(dir, "new");
    mkdirSync(fresh);
    const config = { relay: { domains: { "dest.test": sink.route } }, queue: { retry_schedule: ["1h"] } };
    writeFileSync(join(fresh, "restore.yaml"), JSON.stringify({ ...config, state_dir: join(fresh, "state") }));
    const restored = await run([BINARY, "restore", made.path, "--json", "--config", join(fresh, "restore.yaml")]);
    expect(restored.err).toBe("");
    expect(JSON.parse(restored.out)).toMatchObject({ messages: 1 });
    const relay = await Relay.start({ config, dir: fresh });
    cleanups.push(() => relay.cleanup());
    expect((await relay.admin("POST", "/admin/queue/flush")).status).toBe(200);
    const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: from schema 0")), 15_000, "delivery of the migrated message");
    expect(got.raw.toString()).toContain("kept across versions");
    await relay.stop();
  }, 60_000);
});
