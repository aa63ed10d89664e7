// The state directory lock: one relay per directory, released by the kernel however the
// holder ends, and never confused by a process id that happens to be alive (PID reuse after a
// reboot). The holder is a second real process, since the lock is a per-process file lock.

import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { acquireStateLock, runningPid, StateLocked } from "../../src/state-lock.ts";
import { tempDir } from "../helpers/relay.ts";

const MODULE = resolve(import.meta.dir, "../../src/state-lock.ts");
const dirs: string[] = [];
const children: Subprocess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = tempDir("mailraven-lock-");
  dirs.push(d);
  return join(d, "state");
}

/** Another process that takes the lock, says so on stdout, and holds it until killed. */
async function holder(dir: string): Promise<Subprocess<"ignore", "pipe", "pipe">> {
  const script = `import { acquireStateLock } from ${JSON.stringify(MODULE)};
acquireStateLock(${JSON.stringify(dir)}); console.log("locked"); setInterval(() => {}, 60_000);`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.push(child);
  const reader = child.stdout.getReader();
  const { value } = await Promise.race([reader.read(), child.exited.then(async () => ({ value: new TextEncoder().encode(await new Response(child.stderr).text()) }))]);
  reader.releaseLock();
  expect(new TextDecoder().decode(value)).toBe("locked\n");
  return child;
}

describe("state lock", () => {
  test("a second relay on the same directory is refused, naming the holder's pid", async () => {
    const dir = stateDir();
    const child = await holder(dir);
    expect(runningPid(dir)).toBe(child.pid);
    let err: unknown;
    try {
      acquireStateLock(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateLocked);
    expect((err as Error).message).toContain(`pid ${child.pid}`);
  });

  test("kill -9 of the holder releases the lock at once", async () => {
    const dir = stateDir();
    const child = await holder(dir);
    child.kill("SIGKILL");
    await child.exited;
    expect(runningPid(dir)).toBeNull();
    const lock = acquireStateLock(dir);
    lock.release();
  });

  test("a pid file naming a live process that is not a relay (PID reuse after reboot) does not block start-up", () => {
    const dir = stateDir();
    mkdirSync(dir, { recursive: true });
    // pid 1 is always alive; the test runner's parent is alive too.
    for (const pid of [1, process.ppid]) {
      writeFileSync(join(dir, "mailraven.pid"), `${pid}\n`);
      expect(runningPid(dir)).toBeNull();
      const lock = acquireStateLock(dir);
      expect(runningPid(dir)).toBeNull(); // we hold it: not "another" relay
      lock.release();
    }
  });

  test("released: the next relay takes it; the pid file goes with it", () => {
    const dir = stateDir();
    const first = acquireStateLock(dir);
    expect(existsSync(join(dir, "mailraven.pid"))).toBe(true);
    first.release();
    expect(existsSync(join(dir, "mailraven.pid"))).toBe(false);
    acquireStateLock(dir).release();
  });

  test("asking whether a relay runs creates nothing (a root-run probe leaves no root-owned file)", () => {
    const dir = stateDir();
    mkdirSync(dir, { recursive: true });
    expect(runningPid(dir)).toBeNull();
    expect(existsSync(join(dir, "mailraven.lock"))).toBe(false);
    expect(runningPid(join(dir, "missing"))).toBeNull();
  });
});
