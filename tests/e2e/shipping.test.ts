// The files that ship mailraven as a service: the systemd unit (verify clean, exposure score),
// the AppArmor profile (compiles), and scripts/install.sh (puts everything in place with the
// right modes, is idempotent, and --uninstall keeps configuration and state). install.sh runs
// into a temporary root only: nothing here touches the machine's /etc, users or services.

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { BINARY, tempDir } from "../helpers/relay.ts";

const REPO = resolve(import.meta.dir, "../..");
const UNIT = join(REPO, "systemd/mailraven.service");
const PROFILE = join(REPO, "apparmor/usr.local.bin.mailraven");
const INSTALL = join(REPO, "scripts/install.sh");
const SBIN_PATH = `${process.env.PATH ?? ""}:/usr/sbin:/sbin:/usr/bin:/bin`;

const SYSTEMD_ANALYZE = Bun.which("systemd-analyze", { PATH: SBIN_PATH });
const APPARMOR_PARSER = Bun.which("apparmor_parser", { PATH: SBIN_PATH });

const dirs: string[] = [];
function scratch(): string {
  const d = tempDir("mailraven-shipping-");
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function run(cmd: string[], env: Record<string, string | undefined> = {}): { code: number; out: string; err: string } {
  const r = Bun.spawnSync({ cmd, stdout: "pipe", stderr: "pipe", stdin: "ignore", env: { ...process.env, ...env } });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

const mode = (path: string): string => (statSync(path).mode & 0o7777).toString(8).padStart(4, "0");

function requireBinary(): void {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run "npm run build" first`);
}

/** The unit as shipped, with its ExecStart/ExecReload pointing at build/mailraven: verify
 * insists that the commands exist and are executable, and /usr/local/bin/mailraven is not
 * installed on a test machine. Same file name, so the unit name stays mailraven.service. */
function unitAgainstBuild(): string {
  requireBinary();
  const dir = scratch();
  const copy = join(dir, "mailraven.service");
  writeFileSync(copy, readFileSync(UNIT, "utf8").replaceAll("/usr/local/bin/mailraven", BINARY));
  return copy;
}

/** Key=value pairs of the unit (a key may repeat). */
function directives(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) map.set(m[1]!, [...(map.get(m[1]!) ?? []), m[2]!]);
  }
  return map;
}

describe("systemd unit", () => {
  test("runs the relay as mailraven with only CAP_NET_BIND_SERVICE, state and config directories, reload by SIGHUP", () => {
    const d = directives(readFileSync(UNIT, "utf8"));
    const one = (k: string) => d.get(k)?.at(-1);
    expect(one("ExecStart")).toBe("/usr/local/bin/mailraven serve --config /etc/mailraven/mailraven.yaml");
    // The binary checks the file and signals the relay itself: /bin/kill (procps) is not on a minimal host.
    expect(d.get("ExecReload")).toEqual(["/usr/local/bin/mailraven reload --config /etc/mailraven/mailraven.yaml --pid $MAINPID"]);
    expect(one("User")).toBe("mailraven");
    expect(one("StateDirectory")).toBe("mailraven");
    expect(one("ConfigurationDirectory")).toBe("mailraven");
    expect(one("AmbientCapabilities")).toBe("CAP_NET_BIND_SERVICE");
    expect(one("CapabilityBoundingSet")).toBe("CAP_NET_BIND_SERVICE");
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("RestrictAddressFamilies")).toBe("AF_INET AF_INET6 AF_UNIX");
    expect(one("IPAddressDeny")).toBe("169.254.0.0/16 fe80::/10");
    expect(d.get("SystemCallFilter")).toContain("@system-service");
    expect(one("UMask")).toBe("0077");
    expect(one("TimeoutStopSec")).toBe("45s");
    expect(one("RestartPreventExitStatus")).toBe("78");
    expect(Number(one("LimitNOFILE"))).toBeGreaterThanOrEqual(65536);
    // Ceilings, and no way to the cloud metadata services (link-local).
    expect(one("MemoryHigh")).toBe("1G");
    expect(one("MemoryMax")).toBe("1536M");
    expect(Number(one("TasksMax"))).toBeGreaterThanOrEqual(256);
    expect(d.get("IPAddressDeny")).toContain("169.254.0.0/16 fe80::/10");
    // The JIT needs writable+executable memory; see the comment in the unit.
    expect(d.has("MemoryDenyWriteExecute")).toBe(false);
  });

  test.skipIf(!SYSTEMD_ANALYZE)("systemd-analyze verify reports nothing", () => {
    const r = run([SYSTEMD_ANALYZE!, "verify", unitAgainstBuild()]);
    expect(`${r.out}${r.err}`.trim()).toBe("");
    expect(r.code).toBe(0);
  });

  test.skipIf(!SYSTEMD_ANALYZE)("systemd-analyze security --offline: overall exposure 1.5 or lower", () => {
    const r = run([SYSTEMD_ANALYZE!, "security", "--offline=true", "--no-pager", unitAgainstBuild()]);
    expect(r.code).toBe(0);
    const m = /Overall exposure level for mailraven\.service: (\d+(?:\.\d+)?)/.exec(r.out);
    if (!m) throw new Error(`no overall exposure line in:\n${r.out}\n${r.err}`);
    expect(Number(m[1])).toBeLessThanOrEqual(1.5);
  });
});

describe("AppArmor profile", () => {
  if (!APPARMOR_PARSER) {
    // scripts/test.sh installs Debian's "apparmor" package; this is for a bare `bun test`.
    test.skip("apparmor_parser is not installed (apt-get install apparmor): profile not compiled", () => {});
    return;
  }

  test("compiles without errors or warnings, every rule enforceable with the AppArmor 3.0 feature set", () => {
    // -Q: do not load into the kernel, -K/-T: no cache, -S: the compiled policy to stdout.
    // Without AppArmor in the running kernel the parser would assume a bare feature set and
    // call half the rules unenforced, so compile against the ABI the profile declares.
    const abi = "/etc/apparmor.d/abi/3.0";
    const features = existsSync(abi) ? ["--kernel-features", abi] : [];
    const r = Bun.spawnSync({
      cmd: [APPARMOR_PARSER, "-Q", "-K", "-T", "-S", ...features, "--warn=rule-not-enforced", "--warn=rule-downgraded", "--warn=abi", PROFILE],
      stdout: "pipe",
      stderr: "pipe",
    });
    const warnings = r.stderr
      .toString()
      .split("\n")
      .filter((l) => l.trim() !== "" && !l.startsWith("Cache read/write disabled"));
    expect(warnings).toEqual([]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(1000); // the binary policy
  });

  test("one profile named mailraven for /usr/local/bin/mailraven: net_bind_service, and setgid/setuid to drop from root", () => {
    const names = run([APPARMOR_PARSER, "-N", PROFILE]);
    expect(names.code).toBe(0);
    expect(names.out.trim()).toBe("mailraven");
    const text = readFileSync(PROFILE, "utf8");
    expect(text).toMatch(/^profile mailraven \/usr\/local\/bin\/mailraven \{/m);
    expect([...text.matchAll(/^\s*capability\s+([^,]+),/gm)].map((m) => m[1])).toEqual(["net_bind_service", "setgid", "setuid"]);
    expect(text).toMatch(/^\s*\/etc\/mailraven\/\*\* r,/m);
    // l: dkim keygen links a finished key into place; restore and keygen write as the owner.
    expect(text).toMatch(/^\s*\/var\/lib\/mailraven\/\*\* rwkl,/m);
  });
});

describe("scripts/install.sh into a temporary root", () => {
  // Stand-ins that record any call: a staged install must not create users, chown, or talk
  // to systemd or the kernel's AppArmor.
  function fakeSystemTools(): { path: string; log: string } {
    const dir = scratch();
    const log = join(dir, "calls.log");
    for (const tool of ["systemctl", "apparmor_parser", "adduser", "useradd", "deluser", "chown"]) {
      writeFileSync(join(dir, tool), `#!/bin/sh\necho "${tool} $*" >> "${log}"\n`);
      chmodSync(join(dir, tool), 0o755);
    }
    return { path: `${dir}:${process.env.PATH ?? "/usr/bin:/bin"}`, log };
  }

  function install(root: string, ...args: string[]): { code: number; out: string; err: string; calls: string } {
    requireBinary();
    const tools = fakeSystemTools();
    const r = run(["bash", INSTALL, "--root", root, ...args], { PATH: tools.path, DESTDIR: undefined });
    return { ...r, calls: existsSync(tools.log) ? readFileSync(tools.log, "utf8") : "" };
  }

  const files = (root: string) => ({
    bin: join(root, "usr/local/bin/mailraven"),
    unit: join(root, "etc/systemd/system/mailraven.service"),
    profile: join(root, "etc/apparmor.d/usr.local.bin.mailraven"),
    backupSh: join(root, "usr/local/share/mailraven/backup.sh"),
    restoreSh: join(root, "usr/local/share/mailraven/restore.sh"),
    confdir: join(root, "etc/mailraven"),
    config: join(root, "etc/mailraven/mailraven.yaml"),
    token: join(root, "etc/mailraven/admin.token"),
    statedir: join(root, "var/lib/mailraven"),
  });

  test("puts every file in place with its mode, and touches nothing outside the root", () => {
    const userBefore = run(["getent", "passwd", "mailraven"]).out;
    const root = scratch();
    const r = install(root);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.calls).toBe("");
    const f = files(root);
    expect(mode(f.bin)).toBe("0755");
    expect(run(["cmp", "-s", BINARY, f.bin]).code).toBe(0);
    expect(mode(f.unit)).toBe("0644");
    expect(readFileSync(f.unit, "utf8")).toBe(readFileSync(UNIT, "utf8"));
    expect(mode(f.profile)).toBe("0644");
    expect(readFileSync(f.profile, "utf8")).toBe(readFileSync(PROFILE, "utf8"));
    expect(mode(f.backupSh)).toBe("0755");
    expect(mode(f.restoreSh)).toBe("0755");
    expect(mode(f.confdir)).toBe("0750");
    expect(mode(f.config)).toBe("0640");
    expect(readFileSync(f.config, "utf8")).toBe(readFileSync(join(REPO, "build/mailraven.example.yaml"), "utf8"));
    expect(mode(f.token)).toBe("0640");
    expect(readFileSync(f.token, "utf8")).toMatch(/^[0-9a-f]{64}\n$/);
    expect(mode(f.statedir)).toBe("0700");
    expect(run([f.bin, "version"]).out).toStartWith("mailraven ");
    expect(run(["getent", "passwd", "mailraven"]).out).toBe(userBefore);
  });

  test("running it again changes nothing: the admin's config and token are kept, program files untouched", () => {
    const root = scratch();
    expect(install(root).code).toBe(0);
    const f = files(root);
    writeFileSync(f.config, `${readFileSync(f.config, "utf8")}\n# edited by the admin\n`);
    const token = readFileSync(f.token, "utf8");
    const inode = statSync(f.bin).ino;
    const again = install(root);
    expect(again.code).toBe(0);
    expect(again.calls).toBe("");
    expect(again.out).toContain("exists: kept");
    expect(readFileSync(f.config, "utf8")).toEndWith("# edited by the admin\n");
    expect(readFileSync(f.token, "utf8")).toBe(token);
    expect(statSync(f.bin).ino).toBe(inode);
    expect(mode(f.bin)).toBe("0755");
    expect(mode(f.config)).toBe("0640");
  });

  test("an upgrade replaces a changed program file by rename (a running relay keeps its old inode)", () => {
    const root = scratch();
    expect(install(root).code).toBe(0);
    const f = files(root);
    writeFileSync(f.unit, "[Service]\nExecStart=/bin/true\n");
    const inode = statSync(f.unit).ino;
    expect(install(root).code).toBe(0);
    expect(readFileSync(f.unit, "utf8")).toBe(readFileSync(UNIT, "utf8"));
    expect(statSync(f.unit).ino).not.toBe(inode);
    expect(mode(f.unit)).toBe("0644");
  });

  test("--uninstall (DESTDIR form) removes binary, unit, profile and helpers, keeps configuration and state", () => {
    const root = scratch();
    expect(install(root).code).toBe(0);
    const f = files(root);
    mkdirSync(join(f.statedir, "backups"), { recursive: true });
    writeFileSync(join(f.statedir, "queue.db"), "queue");
    const tools = fakeSystemTools();
    const r = run(["bash", INSTALL, "--uninstall"], { PATH: tools.path, DESTDIR: root });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(existsSync(tools.log)).toBe(false);
    for (const gone of [f.bin, f.unit, f.profile, f.backupSh, f.restoreSh]) expect(existsSync(gone)).toBe(false);
    expect(existsSync(f.config)).toBe(true);
    expect(existsSync(f.token)).toBe(true);
    expect(readFileSync(join(f.statedir, "queue.db"), "utf8")).toBe("queue");
    expect(existsSync(join(f.statedir, "backups"))).toBe(true);
    expect(r.out).toContain("kept (your configuration, queue and backups)");
    // And once more: nothing left to remove is not an error.
    expect(run(["bash", INSTALL, "--uninstall"], { PATH: tools.path, DESTDIR: root }).code).toBe(0);
  });

  test("unknown arguments are refused before anything is done", () => {
    const root = scratch();
    const r = install(root, "--frobnicate");
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("unknown argument: --frobnicate");
    expect(existsSync(join(root, "usr"))).toBe(false);
  });
});
