// A real systemd host for the system tests: a minimal Debian 12 root made with debootstrap from
// the Debian archive (cached between runs, keyed by its package list), booted with systemd as
// PID 1 under systemd-nspawn with no network but its own loopback. Each run boots an overlay
// on the cached root, so the cache is never changed and a reboot keeps the run's state.
// Commands run inside with nsenter, as an admin's shell would run them.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { run, type RunResult } from "./run.ts";

export const SUITE = "bookworm";
/**
 * What a minimal systemd host has on top of debootstrap's minbase (systemd as init, D-Bus, CA
 * certificates) and what the test needs there: curl, which scripts/backup.sh calls. Not procps,
 * so /bin/kill is missing as on a real minimal host. The SMTP client (swaks) runs from the
 * test machine inside the container's network namespace instead of being installed.
 */
export const PACKAGES = ["systemd", "systemd-sysv", "dbus", "ca-certificates", "curl"];
const MIRROR = "http://deb.debian.org/debian";
const CACHE_DIR = "/var/cache/mailraven-test";
const RUN_DIR = "/var/tmp";
const SBIN_PATH = `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ""}`;
/** The environment of commands inside: a root shell's, without anything of the test runner's. */
const INSIDE_ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root", LANG: "C.UTF-8", TERM: "dumb", SYSTEMD_PAGER: "", SYSTEMD_COLORS: "0" };

const tool = (name: string) => Bun.which(name, { PATH: SBIN_PATH });

/** Why the system tests cannot run here, or null when they can. Checked in well under a second. */
export function systemTestSkipReason(): string | null {
  if (process.env.MAILRAVEN_SYSTEM_TEST === "0") return "MAILRAVEN_SYSTEM_TEST=0 is set";
  if (process.getuid?.() !== 0) return "not running as root (debootstrap, systemd-nspawn and nsenter need root)";
  for (const name of ["debootstrap", "systemd-nspawn", "nsenter", "swaks", "mount"]) {
    if (!tool(name)) return `${name} is not installed (scripts/test.sh installs debootstrap, systemd-container and swaks)`;
  }
  // A container from the host's own /usr, to see whether this machine lets nspawn make its
  // namespaces, mounts and private network at all (inside an unprivileged container it cannot).
  const probe = mkdtempSync(join(RUN_DIR, "mailraven-nspawn-probe-"));
  try {
    mkdirSync(join(probe, "usr"));
    mkdirSync(join(probe, "etc"));
    for (const d of ["bin", "sbin", "lib", "lib64"]) Bun.spawnSync(["ln", "-s", `usr/${d}`, join(probe, d)]);
    writeFileSync(join(probe, "etc/os-release"), readFileSync("/etc/os-release"));
    const r = Bun.spawnSync([tool("systemd-nspawn")!, "--register=no", "--keep-unit", "--quiet", "--private-network", "-D", probe, "--bind-ro=/usr", "/bin/true"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, PATH: SBIN_PATH } });
    if (r.exitCode !== 0) return `systemd-nspawn cannot start a container on this machine: ${r.stderr.toString().trim().split("\n").slice(-3).join(" / ")}`;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
  return null;
}

/**
 * The cached Debian root, made first if this package list has none yet: debootstrap into a
 * temporary directory beside the cache, then one rename, so an interrupted build never leaves a
 * half root under the real name (and two test runs building at once both end up with one).
 */
export async function cachedRoot(log: (line: string) => void): Promise<{ path: string; builtMs: number | null }> {
  const key = createHash("sha256").update(JSON.stringify({ suite: SUITE, variant: "minbase", mirror: MIRROR, packages: PACKAGES })).digest("hex").slice(0, 12);
  const path = join(CACHE_DIR, `${SUITE}-${key}`);
  if (existsSync(join(path, "etc/os-release"))) return { path, builtMs: null };
  mkdirSync(CACHE_DIR, { recursive: true, mode: 0o700 });
  const tmp = mkdtempSync(join(CACHE_DIR, `.build-${SUITE}-`));
  const started = performance.now();
  log(`debootstrap ${SUITE} (minbase + ${PACKAGES.join(", ")}) from ${MIRROR} into ${tmp}: a few minutes, once`);
  const r = await run([tool("debootstrap")!, "--variant=minbase", `--include=${PACKAGES.join(",")}`, SUITE, join(tmp, "root"), MIRROR]);
  if (r.code !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`debootstrap failed (${r.code}):\n${r.text.split("\n").slice(-20).join("\n")}`);
  }
  try {
    renameSync(join(tmp, "root"), path);
  } catch (err) {
    // Another run finished first: use its root.
    if (!existsSync(join(path, "etc/os-release"))) throw err;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // Roots of older package lists are of no further use.
  for (const name of readdirSync(CACHE_DIR)) {
    if (name.startsWith(`${SUITE}-`) && join(CACHE_DIR, name) !== path) rmSync(join(CACHE_DIR, name), { recursive: true, force: true });
  }
  return { path, builtMs: performance.now() - started };
}

export interface BootOptions {
  /** Host directories the container sees read-only: [host path, container path]. */
  readonly bindReadOnly: readonly (readonly [string, string])[];
  readonly log: (line: string) => void;
}

/** One booted container and the overlay it runs on. */
export class Container {
  private nspawn: Subprocess | null = null;
  /** The container's PID 1, as seen from the host. */
  pid = 0;
  private boots = 0;

  private constructor(
    /** The run's directory: upper and work of the overlay, the merged root, console logs. */
    readonly dir: string,
    private readonly opts: BootOptions,
  ) {}

  /** Where the container's file `path` is, seen from the host. */
  path(inside: string): string {
    return join(this.dir, "root", inside);
  }

  static async create(lower: string, opts: BootOptions): Promise<Container> {
    removeStaleRuns();
    const dir = mkdtempSync(join(RUN_DIR, `mailraven-system-${process.pid}-`));
    for (const d of ["upper", "work", "root"]) mkdirSync(join(dir, d));
    const mounted = await run([tool("mount")!, "-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${join(dir, "upper")},workdir=${join(dir, "work")}`, join(dir, "root")]);
    if (mounted.code !== 0) {
      // No overlayfs here (e.g. already on an overlay): a plain copy, slower but equivalent.
      opts.log(`overlay mount failed (${mounted.err.trim()}); copying the root instead`);
      const copied = await run(["cp", "-a", "--reflink=auto", `${lower}/.`, join(dir, "root")]);
      if (copied.code !== 0) throw new Error(`cannot copy the root: ${copied.err}`);
    }
    return new Container(dir, opts);
  }

  /** Boots systemd and waits until it reports the system up (running, or degraded). */
  async boot(deadlineMs = 90_000): Promise<void> {
    const n = ++this.boots;
    const console = join(this.dir, `console-${n}.log`);
    const args = [
      tool("systemd-nspawn")!,
      "--register=no",
      "--keep-unit",
      "--boot",
      "--private-network", // only its own loopback: nothing the relay sends can leave 127.0.0.0/8
      "--link-journal=no",
      "--console=read-only",
      `--machine=mailraven-test-${process.pid}`,
      `--hostname=mx`,
      "-D",
      join(this.dir, "root"),
      ...this.opts.bindReadOnly.map(([from, to]) => `--bind-ro=${from}:${to}`),
    ];
    this.nspawn = Bun.spawn(args, { stdin: "ignore", stdout: Bun.file(console), stderr: Bun.file(join(this.dir, `nspawn-${n}.log`)), env: { ...process.env, PATH: SBIN_PATH } });
    const deadline = Date.now() + deadlineMs;
    // nspawn's child becomes PID 1 of the new namespace first and only then executes systemd.
    this.pid = await this.until(() => containerInit(this.nspawn!.pid, "systemd"), deadline, "systemd as the container's PID 1");
    // --wait returns once boot is finished: "running", or "degraded" if some unit failed;
    // "offline" until systemd answers on its socket.
    let last = "";
    try {
      await this.until(async () => {
        const state = await this.runUntil(deadline, ["systemctl", "is-system-running", "--wait"]);
        last = state.text.trim();
        return /^(running|degraded)$/m.test(state.out);
      }, deadline, "the boot to finish");
    } catch (err) {
      throw new Error(`${(err as Error).message} (systemctl is-system-running: ${last})\n${this.tail(console)}`);
    }
  }

  /** Runs a command inside, as root, in every namespace of the container (what an admin's root shell does). */
  exec(cmd: readonly string[], stdin?: string): Promise<RunResult> {
    return run([tool("nsenter")!, "-t", String(this.pid), "-a", "--wdns=/", "--", "env", "-i", ...Object.entries(INSIDE_ENV).map(([k, v]) => `${k}=${v}`), ...cmd], stdin);
  }

  /** Runs a program of the test machine in the container's network namespace only (a client on its loopback). */
  execInNetwork(cmd: readonly string[], stdin?: string): Promise<RunResult> {
    return run([tool("nsenter")!, "-t", String(this.pid), "-n", "--", ...cmd], stdin);
  }

  /** The same, with pipes left open for a conversation. */
  spawnInNetwork(cmd: readonly string[]): Subprocess<"pipe", "pipe", "pipe"> {
    return Bun.spawn([tool("nsenter")!, "-t", String(this.pid), "-n", "--", ...cmd], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  }

  /** Polls `check` (which may run commands) until it returns something truthy or the deadline passes. */
  async until<T>(check: () => T | Promise<T>, deadline: number, what: string): Promise<NonNullable<T>> {
    for (;;) {
      const v = await check();
      if (v) return v as NonNullable<T>;
      if (this.nspawn?.exitCode !== null && this.nspawn?.exitCode !== undefined) throw new Error(`the container stopped (nspawn exit ${this.nspawn.exitCode}) while waiting for ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await Bun.sleep(100);
    }
  }

  /** Waits until a TCP port inside accepts connections. */
  async waitForPort(port: number, deadline: number): Promise<void> {
    await this.until(async () => (await this.execInNetwork(["bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`])).code === 0, deadline, `port ${port} inside the container`);
  }

  /** Waits until a unit is in `state` (systemctl is-active). */
  async waitForUnit(unit: string, state: string, deadline: number): Promise<void> {
    await this.until(async () => (await this.exec(["systemctl", "is-active", unit])).out.trim() === state, deadline, `${unit} to be ${state}`);
  }

  /** `systemctl reboot` inside, then boot the same root again (nspawn exits when its container reboots). */
  async reboot(beforeBoot?: () => void, deadlineMs = 90_000): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    const nspawn = this.nspawn!;
    await this.exec(["systemctl", "reboot"]);
    const code = await Promise.race([nspawn.exited, Bun.sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
    if (code === null) throw new Error("the container did not go down after systemctl reboot");
    beforeBoot?.();
    await this.boot(Math.max(1000, deadline - Date.now()));
  }

  /** Powers the container off (SIGKILL if it will not go), unmounts the overlay, removes the run. */
  async destroy(): Promise<void> {
    const nspawn = this.nspawn;
    if (nspawn && nspawn.exitCode === null) {
      await this.exec(["systemctl", "poweroff"]).catch(() => undefined);
      const stopped = await Promise.race([nspawn.exited.then(() => true), Bun.sleep(30_000).then(() => false)]);
      if (!stopped) nspawn.kill("SIGKILL");
      await nspawn.exited;
    }
    await run(["umount", join(this.dir, "root")]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async runUntil(deadline: number, cmd: string[]): Promise<RunResult> {
    return Promise.race([
      this.exec(cmd),
      Bun.sleep(Math.max(0, deadline - Date.now())).then((): RunResult => ({ code: -1, out: "", err: "timed out", text: `timed out: ${cmd.join(" ")}` })),
    ]);
  }

  private tail(path: string): string {
    try {
      return readFileSync(path, "utf8").split("\n").slice(-30).join("\n");
    } catch {
      return "";
    }
  }
}

/** The child of nspawn that is PID 1 of the new PID namespace, once it runs `comm`. */
function containerInit(nspawnPid: number, comm: string): number | null {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, "utf8");
    } catch {
      continue;
    }
    if (Number(/^PPid:\s*(\d+)/m.exec(status)?.[1]) !== nspawnPid) continue;
    const nspid = /^NSpid:\s*(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    if (nspid && nspid.length > 1 && nspid.at(-1) === "1" && /^Name:\s*(.+)$/m.exec(status)?.[1] === comm) return Number(entry);
  }
  return null;
}

/** Runs of earlier test processes that died before cleaning up (their pid is gone). */
function removeStaleRuns(): void {
  for (const name of readdirSync(RUN_DIR)) {
    const m = /^mailraven-system-(\d+)-/.exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // still running: another test process's container
    } catch {
      // gone
    }
    Bun.spawnSync(["umount", "-l", join(RUN_DIR, name, "root")], { stdout: "ignore", stderr: "ignore" });
    rmSync(join(RUN_DIR, name), { recursive: true, force: true });
  }
}
