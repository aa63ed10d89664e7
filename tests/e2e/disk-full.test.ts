// A full disk, for real: the state directory is a small tmpfs (8 MiB) that the test fills.
// Below queue.min_free_space (Postfix's queue_minfree) MAIL FROM gets 452 4.3.1; a write that
// fails during DATA or at the commit gets 452 4.3.1 too, never the system's error text; and
// /health says degraded (503) with low space, and with an unwritable queue.
// Needs root (mount); without it the tests are skipped with the reason printed.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { metric } from "../helpers/observe.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const dir = tempDir("mailraven-diskfull-");
const state = join(dir, "state");
mkdirSync(state);
const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", state], { stderr: "pipe" });
const mounted = mount.exitCode === 0;
if (!mounted) console.log(`disk-full tests skipped: cannot mount a tmpfs (${mount.stderr.toString().trim() || `exit ${mount.exitCode}`}); they need root`);

let sink: Sink;
let relay: Relay;
const FILLER = join(state, "filler");

const free = () => {
  const s = statfsSync(state);
  return s.bavail * s.bsize;
};

/** Leaves about `target` bytes free on the tmpfs (0: none at all). */
function fillTo(target: number): void {
  rmSync(FILLER, { force: true });
  const fd = openSync(FILLER, "w");
  const block = Buffer.alloc(64 * 1024, 0x66);
  try {
    for (let n = 0; n < 1024 && free() > target; n++) {
      const want = Math.min(block.length, free() - target);
      if (want <= 0) break;
      writeSync(fd, block, 0, want);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
}

async function health(): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await relay.admin("GET", "/health", null);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function session(): Promise<SmtpTalk> {
  const { talk } = await SmtpTalk.open(relay.port);
  expect((await talk.send("EHLO client.test")).code).toBe(250);
  return talk;
}

/** Sets queue.min_free_space and reloads (SIGHUP), waiting for the relay to say so. */
async function reserve(size: string): Promise<void> {
  const doc = JSON.parse(readFileSync(relay.configPath, "utf8")) as Record<string, Record<string, unknown>>;
  doc.queue = { ...doc.queue, min_free_space: size };
  writeFileSync(relay.configPath, JSON.stringify(doc));
  const reloads = relay.count("configuration reloaded");
  relay.proc.kill("SIGHUP");
  await waitFor(() => relay.count("configuration reloaded") > reloads, 10_000, "the reload");
}

beforeAll(async () => {
  if (!mounted) return;
  sink = await Sink.start();
  relay = await Relay.start({
    dir,
    config: { relay: { domains: { "dest.test": sink.route } }, smtp: { max_message_size: "1MiB" }, queue: { min_free_space: "3MiB" } },
  });
}, 60_000);
afterAll(async () => {
  if (!mounted) return rmSync(dir, { recursive: true, force: true });
  try {
    // A relay that does not stop in time is killed: the tmpfs must never be left mounted.
    if (relay && (await Promise.race([relay.stop(), Bun.sleep(20_000).then(() => null)])) === null) await relay.kill9();
    await sink?.close();
  } finally {
    if (Bun.spawnSync(["umount", state]).exitCode !== 0) Bun.spawnSync(["umount", "-l", state]);
    relay?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

describe.skipIf(!mounted)("a full state directory (8 MiB tmpfs)", () => {
  test("with room to spare: mail is taken and /health is ok", async () => {
    const t = await session();
    expect((await t.transaction("a@origin.test", ["bob@dest.test"], "Subject: roomy\r\n\r\nx\r\n")).code).toBe(250);
    t.close();
    const h = await health();
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ status: "ok", queue_writable: true, low_disk_space: false });
    expect(await metric(relay, "mailraven_disk_free_bytes")).toBeGreaterThan(await metric(relay, "mailraven_disk_reserve_bytes"));
  });

  test("free space under queue.min_free_space: MAIL FROM gets 452 4.3.1, /health is degraded (503)", async () => {
    fillTo(2 * 1024 * 1024);
    // The free space is read at most once a second: ask until the relay has seen it.
    const r = await waitFor(async () => {
      const t = await session();
      const reply = await t.send("MAIL FROM:<a@origin.test>");
      t.close();
      return reply.code === 250 ? null : reply;
    }, 5000, "the 452");
    expect(r.code).toBe(452);
    expect(r.text).toBe("4.3.1 Insufficient system storage");
    const h = await health();
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({ status: "degraded", queue_writable: true, low_disk_space: true });
    expect(h.body.disk_free_bytes).toBeLessThan(3 * 1024 * 1024);
    // What the disk alerts compare (contrib/prometheus): free space now under the reserve.
    const freeMetric = await metric(relay, "mailraven_disk_free_bytes");
    expect(freeMetric).toBeGreaterThan(0);
    expect(freeMetric).toBeLessThan(await metric(relay, "mailraven_disk_reserve_bytes"));
    await relay.waitForLog((l) => l.msg === "insufficient storage" && l.code === 452);
  });

  test("a spool write that fails in the middle of DATA: 452 4.3.1 without the system's error text, nothing left behind", async () => {
    await reserve("0");
    fillTo(256 * 1024);
    const t = await session();
    const big = `Subject: too big for the disk\r\n\r\n${`${"b".repeat(998)}\r\n`.repeat(900)}`;
    const r = await t.transaction("a@origin.test", ["bob@dest.test"], big);
    expect(r.code).toBe(452);
    expect(r.text).toBe("4.3.1 Insufficient system storage");
    expect(r.lines.join("\n")).not.toMatch(/ENOSPC|errno|\/tmp|no space/i);
    // The session is still in step and usable.
    expect((await t.send("NOOP")).code).toBe(250);
    t.close();
    expect(readdirSync(join(state, "spool"))).toEqual([]);
    expect(queueCounts(dir).messages).toBe(0);
    const line = await relay.waitForLog((l) => l.msg === "message not stored");
    expect(JSON.stringify(line)).toContain("ENOSPC");
  });

  test("no room at all: the commit fails with 452 4.3.1, /health says the queue is not writable, the relay keeps running", async () => {
    fillTo(0);
    const t = await session();
    const r = await t.transaction("a@origin.test", ["bob@dest.test"], "Subject: small\r\n\r\nx\r\n");
    expect(r.code).toBe(452);
    expect(r.text).toBe("4.3.1 Insufficient system storage");
    t.close();
    const h = await health();
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({ status: "degraded", queue_writable: false });
  });

  test("space back: mail is taken again and delivered", async () => {
    rmSync(FILLER, { force: true });
    const t = await session();
    expect((await t.transaction("a@origin.test", ["bob@dest.test"], "Subject: space again\r\n\r\nx\r\n")).code).toBe(250);
    t.close();
    await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: space again")), 10_000, "delivery");
    expect((await health()).status).toBe(200);
    expect(relay.proc.exitCode).toBeNull();
  });
});
