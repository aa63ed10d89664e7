// mailraven on a real systemd host, run the way the README tells an admin to: a minimal Debian 12
// (debootstrap minbase, systemd as PID 1, no procps) booted with systemd-nspawn, no network but
// its own loopback. install.sh, systemctl enable --now, mail in on port 25 relayed to a sink
// on the container's loopback, systemctl reload with a good and a bad file, the cron backup as
// the mailraven user, POST /admin/backup, restore.sh, systemd-analyze security on the running
// unit, warnings in journalctl -p warning, systemctl stop draining a session, and a reboot
// with mail queued. The tests run in order on one container; each waits for what it needs
// (a port, a unit state, a journal line, a file) with a deadline.
//
// Needs root and a machine where systemd-nspawn works; otherwise the whole file is skipped and
// says why. The first run builds the Debian root (debootstrap, about 2 minutes); later runs use
// the cache in /var/cache/mailraven-test.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { BINARY } from "../helpers/relay.ts";
import { cachedRoot, Container, systemTestSkipReason } from "../helpers/nspawn.ts";

const REPO = resolve(import.meta.dir, "../..");
const SRC = "/opt/mailraven"; // where the container sees the repository (read-only), as a checkout
const CONFIG = "/etc/mailraven/mailraven.yaml";
const SINK_DIR = "/var/lib/mailraven-sink";
const skip = systemTestSkipReason();
if (skip) {
  // Loud on purpose: a skipped system test must not pass for a green one.
  console.warn(`\n${"=".repeat(100)}\nSYSTEM TEST SKIPPED: ${skip}\n${"=".repeat(100)}\n`);
}

let c: Container;
const timings: Record<string, number> = {};
const log = (line: string) => console.log(`[system] ${line}`);

/** The configuration the admin writes; `over` replaces top-level sections. */
function config(over: Record<string, unknown> = {}): string {
  const doc = {
    hostname: "mx.relay.test",
    state_dir: "/var/lib/mailraven",
    log_level: "info",
    smtp: { listen: ["127.0.0.1:25"], greeting_delay: "0s", shutdown_timeout: "20s" },
    relay: { domains: { "dest.test": "smtp://127.0.0.1:2526" }, relay_networks: ["127.0.0.0/8"] },
    // Retries every 3 s for two minutes: queued mail goes out soon after its next hop is back.
    queue: { retry_schedule: Array(40).fill("3s") },
    dns: { servers: ["127.0.0.1:53"] },
    admin: { listen: "127.0.0.1:8025", token_file: "/etc/mailraven/admin.token" },
    ...over,
  };
  return `# written by tests/system/host.test.ts\n${JSON.stringify(doc, null, 2)}\n`;
}

/** The admin edits the configuration (the file keeps its owner and mode, root:mailraven 0640). */
const writeConfig = (text: string) => writeFileSync(c.path(CONFIG), text);

const SINK_UNIT = `[Unit]
Description=test next hop: mailraven sink on 127.0.0.1:2526

[Service]
ExecStart=/usr/local/bin/mailraven sink --listen 127.0.0.1:2526 --dir ${SINK_DIR}

[Install]
WantedBy=multi-user.target
`;

/** Runs inside and expects exit 0; returns stdout. */
async function sh(...cmd: string[]): Promise<string> {
  const r = await c.exec(cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} exited ${r.code}:\n${r.text}`);
  return r.out;
}

/** The relay's JSON log lines in the journal (systemd's own lines about the unit are skipped). */
async function journal(...args: string[]): Promise<Record<string, unknown>[]> {
  const out = await sh("journalctl", "-u", "mailraven", "-o", "cat", "--no-pager", ...args);
  return out.split("\n").flatMap((l) => {
    try {
      const v = JSON.parse(l) as unknown;
      return v && typeof v === "object" ? [v as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

const deadline = (ms: number) => Date.now() + ms;

/** Waits for a relay log line in the journal. */
function journalLine(pred: (l: Record<string, unknown>) => boolean, what: string, ms = 30_000): Promise<Record<string, unknown>> {
  return c.until(async () => (await journal()).find(pred) ?? null, deadline(ms), what);
}

/** swaks from the test machine on the container's loopback. */
async function swaks(...args: string[]): Promise<string> {
  const r = await c.execInNetwork(["swaks", "--server", "127.0.0.1:25", "--helo", "client.test", "--timeout", "20", ...args]);
  return r.text;
}

async function sendMail(rcpt: string, subject: string): Promise<string> {
  const out = await swaks("--from", "alice@origin.test", "--to", rcpt, "--header", `Subject: ${subject}`, "--body", `body of ${subject}`);
  const id = /<-\s+250 2\.0\.0 Ok: queued as (\S+)/.exec(out)?.[1];
  if (!id) throw new Error(`not queued:\n${out}\n${(await c.exec(["systemctl", "status", "mailraven", "--no-pager", "-n", "30"])).text}`);
  return id;
}

/** The messages the sink stored whose text contains `marker`. */
function sunk(marker: string): string[] {
  const dir = c.path(SINK_DIR);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".eml"))
    .map((f) => readFileSync(join(dir, f), "latin1"))
    .filter((m) => m.includes(marker));
}

const waitForSink = (marker: string, ms = 30_000) => c.until(() => (sunk(marker).length ? sunk(marker) : null), deadline(ms), `"${marker}" at the sink`);

describe.skipIf(skip !== null)("a minimal Debian 12 host with systemd", () => {
  beforeAll(async () => {
    if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run "npm run build" first`);
    const started = performance.now();
    const root = await cachedRoot(log);
    timings.debootstrap_ms = root.builtMs ?? 0;
    c = await Container.create(root.path, { bindReadOnly: [[REPO, SRC]], log });
    await c.boot();
    timings.setup_ms = performance.now() - started;
    log(`container up in ${Math.round(timings.setup_ms)} ms (debootstrap: ${root.builtMs === null ? "cached" : `${Math.round(root.builtMs)} ms`})`);
  }, 600_000);

  afterAll(async () => {
    await c?.destroy();
    log(`timings: ${JSON.stringify(timings)}`);
  }, 60_000);

  test("a minimal host: no procps (/bin/kill), no network but loopback", async () => {
    expect(await sh("ls", "/sys/class/net")).toBe("lo\n");
    expect((await c.exec(["test", "-e", "/bin/kill"])).code).toBe(1);
    expect((await c.exec(["test", "-e", "/usr/bin/kill"])).code).toBe(1);
  });

  test("scripts/install.sh installs the binary, unit, profile, helpers, user and a token", async () => {
    const out = await sh(`${SRC}/scripts/install.sh`);
    expect(out).toContain("creating the system user mailraven");
    expect(out).toContain("/etc/mailraven/admin.token (new admin API token)");
    expect(await sh("id", "-un", "mailraven")).toBe("mailraven\n");
    expect(await sh("stat", "-c", "%U:%G %a", "/etc/mailraven", "/etc/mailraven/admin.token", "/var/lib/mailraven")).toBe("root:mailraven 750\nroot:mailraven 640\nmailraven:mailraven 700\n");
    expect(await sh("mailraven", "--version")).toMatch(/^mailraven \d+\.\d+\.\d+\n$/);
  }, 60_000);

  test("the admin's configuration passes check-config; systemctl enable --now starts the relay", async () => {
    writeConfig(config());
    await sh("mailraven", "check-config", "--config", CONFIG);
    writeFileSync(c.path("/etc/systemd/system/mailraven-sink.service"), SINK_UNIT);
    await sh("systemctl", "daemon-reload");
    await sh("systemctl", "enable", "--now", "mailraven-sink", "mailraven");
    const until = deadline(30_000);
    await c.waitForUnit("mailraven", "active", until);
    await Promise.all([c.waitForPort(25, until), c.waitForPort(8025, until), c.waitForPort(2526, until)]);
    expect(await sh("systemctl", "is-enabled", "mailraven")).toBe("enabled\n");
  }, 60_000);

  test("mail in on port 25 is relayed to the next hop on the container's loopback", async () => {
    const id = await sendMail("bob@dest.test", "first message");
    const [msg] = await waitForSink("first message");
    expect(msg).toContain("body of first message");
    expect(msg).toMatch(new RegExp(`Received: from client\\.test \\(.*\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\s+by mx\\.relay\\.test[\\s\\S]*id ${id}`));
    const attempt = await journalLine((l) => l.msg === "delivery attempt" && l.queue_id === id, "the delivery in the journal");
    expect(attempt).toMatchObject({ route: "smtp://127.0.0.1:2526", delivered: 1 });
  }, 60_000);

  test("systemctl reload applies a valid file; an invalid one fails the reload and the old one stays", async () => {
    writeConfig(config({ hostname: "mx2.relay.test" }));
    await sh("systemctl", "reload", "mailraven");
    await journalLine((l) => l.msg === "configuration reloaded", "the reload");
    expect(await swaks("--quit-after", "BANNER")).toContain("<-  220 mx2.relay.test ESMTP");

    writeConfig(config({ hostname: "mx3.relay.test", smtp: { listen: ["127.0.0.1:25"], max_recipients: "many" } }));
    const bad = await c.exec(["systemctl", "reload", "mailraven"]);
    expect(bad.code).not.toBe(0);
    expect(await sh("systemctl", "is-active", "mailraven")).toBe("active\n");
    expect(await swaks("--quit-after", "BANNER")).toContain("<-  220 mx2.relay.test ESMTP");
    // Why it failed is in the journal, as an error.
    expect(await sh("journalctl", "-u", "mailraven", "-p", "err", "-o", "cat", "--no-pager")).toContain("smtp.max_recipients");
    writeConfig(config({ hostname: "mx2.relay.test" })); // the admin fixes the file
  }, 60_000);

  test("journalctl -p warning shows the relay's warnings (and not its info lines)", async () => {
    const r = await c.execInNetwork(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer wrong-token", "http://127.0.0.1:8025/admin/queue"]);
    expect(r.out).toBe("401");
    const warned = await c.until(async () => {
      const lines = (await sh("journalctl", "-u", "mailraven", "-p", "warning", "-o", "cat", "--no-pager")).split("\n");
      return lines.some((l) => l.includes('"admin authentication failed"')) ? lines : null;
    }, deadline(20_000), "the warning in journalctl -p warning");
    expect(warned.join("\n")).not.toContain('"mailraven started"');
  }, 60_000);

  test("the cron backup as the mailraven user, restore.sh, and POST /admin/backup", async () => {
    // Mail waiting for a next hop that is down.
    await sh("systemctl", "stop", "mailraven-sink");
    const id = await sendMail("carol@dest.test", "kept by the backup");
    await journalLine((l) => l.msg === "delivery attempt" && l.queue_id === id && l.deferred === 1, "the deferral");

    const backup = await c.exec(["runuser", "-u", "mailraven", "--", "/usr/local/share/mailraven/backup.sh"]);
    expect(backup.code).toBe(0);
    const path = (JSON.parse(backup.out) as { path: string }).path;
    expect(path).toStartWith("/var/lib/mailraven/backups/");
    expect(await sh("stat", "-c", "%U", path)).toBe("mailraven\n");

    // The message is deleted by mistake; the backup brings it back.
    await sh("mailraven", "queue", "rm", id, "--silent", "--config", CONFIG);
    expect(JSON.parse(await sh("mailraven", "queue", "ls", "--json", "--config", CONFIG)).messages).toEqual([]);
    const restored = await c.exec(["/usr/local/share/mailraven/restore.sh", path]);
    expect(restored.code).toBe(0);
    expect(restored.out).toContain("restored 1 message(s)");
    const until = deadline(30_000);
    await c.waitForUnit("mailraven", "active", until);
    await c.waitForPort(8025, until);
    const listed = JSON.parse(await sh("mailraven", "queue", "ls", "--json", "--config", CONFIG)) as { messages: { id: string }[] };
    expect(listed.messages.map((m) => m.id)).toEqual([id]);

    // The next hop is back: the restored message goes out on its own.
    await sh("systemctl", "start", "mailraven-sink");
    await waitForSink("kept by the backup");

    const token = (await sh("cat", "/etc/mailraven/admin.token")).trim();
    const r = await c.execInNetwork(["curl", "-s", "-X", "POST", "-H", `Authorization: Bearer ${token}`, "http://127.0.0.1:8025/admin/backup"]);
    const body = JSON.parse(r.out) as { path: string; bytes: number };
    expect(body.path).toStartWith("/var/lib/mailraven/backups/");
    expect(existsSync(c.path(join(body.path, "queue.db")))).toBe(true);
  }, 120_000);

  test("systemd-analyze security on the running unit: exposure 1.5 or lower", async () => {
    const out = await sh("systemd-analyze", "security", "mailraven", "--no-pager");
    const score = Number(/Overall exposure level for mailraven\.service: (\d+(?:\.\d+)?)/.exec(out)?.[1]);
    timings.security_online = score;
    expect(score).toBeLessThanOrEqual(1.5);
  }, 60_000);

  test("systemctl stop lets a session in progress finish (250) before the relay exits", async () => {
    const script = String.raw`
exec 3<>/dev/tcp/127.0.0.1/25 || exit 9
reply() { local line; while IFS= read -r -t 30 line <&3; do echo "S: $line"; [ "${"$"}{line:3:1}" = " " ] && return 0; done; return 1; }
send() { printf '%s\r\n' "$1" >&3; }
reply || exit 1
send "EHLO client.test"; reply
send "MAIL FROM:<alice@origin.test>"; reply
send "RCPT TO:<dave@dest.test>"; reply
send "DATA"; reply
send "Subject: drained"; send ""; send "first half"
echo READY
read -r go
send "second half"; send "."; reply
send "QUIT"; reply
`;
    const client = c.spawnInNetwork(["bash", "-c", script]);
    const reader = client.stdout.getReader();
    let seen = "";
    await c.until(async () => {
      const { value, done } = await reader.read();
      if (value) seen += new TextDecoder().decode(value);
      if (done) throw new Error(`the client ended early:\n${seen}`);
      return seen.includes("READY");
    }, deadline(20_000), "the client in the middle of DATA");
    const before = (await journal()).filter((l) => l.msg === "shutting down").length;
    const stopping = c.exec(["systemctl", "stop", "mailraven"]);
    await c.until(async () => (await journal()).filter((l) => l.msg === "shutting down").length > before, deadline(20_000), "shutting down");
    // No new sessions now; the one in progress is allowed to finish.
    await c.until(async () => (await c.execInNetwork(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/25"])).code !== 0, deadline(20_000), "the listener to close");
    client.stdin.write("go\n");
    await client.stdin.end();
    for (;;) {
      const { value, done } = await reader.read();
      if (value) seen += new TextDecoder().decode(value);
      if (done) break;
    }
    expect(await client.exited).toBe(0);
    expect(seen).toMatch(/S: 250 2\.0\.0 Ok: queued as \S+/);
    const stopped = await stopping;
    expect(stopped.code).toBe(0);
    expect(await sh("systemctl", "show", "mailraven", "-p", "ActiveState,Result")).toBe("Result=success\nActiveState=inactive\n");
    // Accepted during the shutdown, so delivered: by the draining relay, or after the next start.
    await sh("systemctl", "start", "mailraven");
    await waitForSink("drained");
    await c.waitForPort(25, deadline(30_000));
  }, 120_000);

  test("a reboot with mail queued (next hop down, a stale pid file naming a live process): the relay starts and delivers it", async () => {
    await sh("systemctl", "stop", "mailraven-sink");
    await c.waitForPort(25, deadline(30_000));
    const id = await sendMail("erin@dest.test", "across the reboot");
    await journalLine((l) => l.msg === "delivery attempt" && l.queue_id === id && l.deferred === 1, "the deferral");
    const relayUid = Number(await sh("id", "-u", "mailraven"));
    await c.reboot(() => {
      // As after a crash: a pid file left behind whose number belongs to a live process after
      // the reboot (PID 1). The lock is the kernel's, so it must not matter.
      const pidFile = c.path("/var/lib/mailraven/mailraven.pid");
      writeFileSync(pidFile, "1\n", { mode: 0o600 });
      chownSync(pidFile, relayUid, relayUid);
    });
    const until = deadline(60_000);
    await c.waitForUnit("mailraven", "active", until);
    await c.waitForPort(25, until).catch(async (err) => {
      throw new Error(`${(err as Error).message}\n${(await c.exec(["journalctl", "-u", "mailraven", "--no-pager", "-n", "20"])).text}`);
    });
    const [msg] = await waitForSink("across the reboot", 60_000);
    expect(msg).toContain("body of across the reboot");
    expect(JSON.parse(await sh("mailraven", "queue", "ls", "--json", "--config", CONFIG)).messages).toEqual([]);
  }, 180_000);
});

if (skip) test.skip(`system test skipped: ${skip}`, () => {});
