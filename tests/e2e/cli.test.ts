// The binary's command line and configuration errors, as an admin meets them.

import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { BINARY, tempDir } from "../helpers/relay.ts";
import { run as exec } from "../helpers/run.ts";

const EXAMPLE = resolve(import.meta.dir, "../../build/mailraven.example.yaml");

const run = (...args: string[]) => exec([BINARY, ...args]);

function configFile(text: string): string {
  const path = join(tempDir(), "mailraven.yaml");
  writeFileSync(path, text);
  return path;
}

describe("command line", () => {
  test("--help prints usage and exits 0; no command exits 2 with usage", async () => {
    const help = await run("--help");
    expect(help.code).toBe(0);
    for (const cmd of ["serve", "check-config", "sink", "version"]) expect(help.out).toContain(cmd);
    const none = await run();
    expect(none.code).toBe(2);
    expect(none.err).toContain("Usage: mailraven");
  });

  test("version", async () => {
    const v = await run("version");
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/^mailraven \d+\.\d+\.\d+\n$/);
  });

  test("unknown command and unknown flag exit 2 naming them", async () => {
    const cmd = await run("frobnicate");
    expect(cmd.code).toBe(2);
    expect(cmd.err).toContain('unknown command "frobnicate"');
    const flag = await run("serve", "--confg", "x");
    expect(flag.code).toBe(2);
    expect(flag.err).toContain("--confg");
  });
});

describe("conventions", () => {
  test("--version prints the version and exits 0, like the version command", async () => {
    const v = await run("--version");
    expect(v.code).toBe(0);
    expect(v.out).toBe((await run("version")).out);
  });

  test("<command> --help and help <command> print that command's usage, not the global one", async () => {
    for (const args of [["queue", "--help"], ["help", "queue"], ["queue", "rm", "-h"]]) {
      const r = await run(...args);
      expect(r.code).toBe(0);
      expect(r.out).toStartWith("Usage: mailraven queue ls");
      expect(r.out).toContain("mailraven queue rm ID [--bounce] [--silent] [--json]");
      expect(r.out).not.toContain("Commands:");
    }
    const reload = await run("reload", "--help");
    expect(reload.out).toContain("--pid PID");
  });

  test("usage errors exit 2 with the command's usage on stderr, before any configuration is read", async () => {
    const cases: [string[], string][] = [
      [["queue", "bogus"], 'unknown queue command "bogus"'],
      [["queue", "show"], "mailraven queue show needs ID"],
      [["queue", "rm", "ID1"], "needs exactly one of --bounce, --silent"],
      [["queue", "rm", "ID1", "--bounce", "--silent"], "needs exactly one of --bounce, --silent"],
      [["restore"], "mailraven restore needs BACKUP"],
      [["serve", "extra"], 'takes no operands; unexpected "extra"'],
      [["dkim"], "mailraven dkim needs one of: keygen, activate, records"],
      [["queue", "ls", "--offline"], "mailraven queue ls does not take --offline"],
      [["sink", "--config", "x.yaml"], "mailraven sink does not take --config"],
      [["help", "frobnicate"], 'unknown command "frobnicate"'],
    ];
    // A config path that does not exist: a usage error must be found first (exit 2, not 78).
    const results = await Promise.all(cases.map(([args]) => run(...args, ...(args[0] === "sink" ? [] : ["--config", "/nonexistent/mailraven.yaml"]))));
    cases.forEach(([args, message], i) => {
      const r = results[i]!;
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.err).toContain(message);
      if (args[0] !== "help") expect(r.err).toContain(`Usage: mailraven ${args[0]}`);
    });
  }, 30_000);

  test("--json is refused where there is no machine-readable output", async () => {
    const cases = [["serve"], ["check-config"], ["reload"], ["sink"], ["user", "add", "ann"], ["apikey", "rm", "k1"], ["version"]];
    const results = await Promise.all(cases.map((args) => run(...args, "--json")));
    cases.forEach((args, i) => {
      expect({ args, code: results[i]!.code }).toEqual({ args, code: 2 });
      expect(results[i]!.err).toContain("does not take --json");
    });
  }, 30_000);
});

describe("check-config", () => {
  test("the shipped example is valid and documents every key of the effective configuration", async () => {
    // The example reads its token from /etc/mailraven/admin.token; point that at a temp file.
    const dir = tempDir();
    writeFileSync(join(dir, "admin.token"), "0123456789abcdef".repeat(4) + "\n", { mode: 0o600 });
    const exampleText0 = await Bun.file(EXAMPLE).text();
    expect(exampleText0).toContain("token_file: /etc/mailraven/admin.token");
    const copy = join(dir, "mailraven.yaml");
    writeFileSync(copy, exampleText0.replace("token_file: /etc/mailraven/admin.token", `token_file: ${join(dir, "admin.token")}`));
    const r = await run("check-config", "--config", copy);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toStartWith("# configuration is valid\n");
    // The token itself is never printed, only where it came from.
    expect(r.out).not.toContain("0123456789abcdef");
    expect(r.out).toContain(`token: "(redacted, from file ${join(dir, "admin.token")})"`);
    const effective = Bun.YAML.parse(r.out) as Record<string, unknown>;
    const exampleText = await Bun.file(EXAMPLE).text();
    const keys = (o: Record<string, unknown>, prefix = ""): string[] =>
      Object.entries(o).flatMap(([k, v]) => (v && typeof v === "object" && !Array.isArray(v) && k !== "domains" ? keys(v as Record<string, unknown>, `${prefix}${k}.`) : [`${prefix}${k}`]));
    for (const key of keys(effective)) {
      const leaf = key.split(".").pop()!;
      expect(exampleText).toMatch(new RegExp(`^\\s*#?\\s*${leaf}:`, "m"));
    }
  });

  test("the embedded trial configuration is valid", async () => {
    const r = await run("check-config", "--embedded-config");
    expect(r.code).toBe(0);
    expect(r.out).toContain("127.0.0.1:2525");
  });

  const bad: [string, string, string[]][] = [
    ["a misspelt key", "smtp:\n  max_conections: 5\n", ['smtp.max_conections: unknown key; did you mean "max_connections"?']],
    ["a bad duration", "smtp:\n  idle_timeout: 5 minutes\n", ['smtp.idle_timeout: expected a duration such as "30s"', 'found string "5 minutes"']],
    ["a bad size", "smtp:\n  max_message_size: lots\n", ["smtp.max_message_size: expected a size"]],
    ["an unknown route scheme", "relay:\n  domains:\n    example.org: http://10.0.0.5\n", ['relay.domains.example.org: expected a route such as "smtp://10.0.0.5:25"']],
    ["a bad network", "relay:\n  relay_networks: [10.0.0.0/33]\n", ["relay.relay_networks[0]: expected an IPv4 or IPv6 network"]],
    ["a bad listen address", "smtp:\n  listen: [localhost]\n", ['smtp.listen[0]: expected an address such as "0.0.0.0:25"']],
    ["a half tls section", "smtp:\n  tls:\n    cert_file: /x.pem\n", ["smtp.tls.key_file: expected the path of a PEM private key"]],
    ["a bad retry entry", "queue:\n  retry_schedule: [5m, soon]\n", ["queue.retry_schedule[1]: expected a delay"]],
    ["an out-of-range integer", "smtp:\n  max_connections: 0\n", ["smtp.max_connections: expected an integer from 1 to 100000, found number 0"]],
    ["broken YAML", "smtp: [\n", ["not valid YAML"]],
    ["a malformed DNS list", "defenses:\n  dnsbl:\n    zones: [\"zen.example=127.0.0.[11..2]\"]\n", ['defenses.dnsbl.zones[0]: expected a DNS list such as "zen.spamhaus.org=127.0.0.[2..11]*3"']],
    ["a pipeline naming an unconfigured check", "pipeline:\n  content: [spamd]\n", ['pipeline.content[0]: "spamd" is listed but defenses.spamd is not configured']],
    ["an unknown check in the pipeline", "pipeline:\n  rcpt: [grey_list]\n", ["pipeline.rcpt[0]: expected one of greylist"]],
    ["a bad rate limit", "defenses:\n  rate_limits:\n    per_ip: lots\n", ['defenses.rate_limits.per_ip: expected messages per window such as "100/1h"']],
    ["a DNS server without an address", "dns:\n  servers: [resolver.example]\n", ["dns.servers[0]: expected an IP address with an optional port"]],
    ["a bad per-domain policy", "relay:\n  domains:\n    example.org:\n      route: smtp://10.0.0.5\n      spf_fail: bounce\n", ['relay.domains.example.org.spf_fail: expected one of reject, tag, found string "bounce"']],
    ["an admin API on a public address without TLS", "admin:\n  listen: 0.0.0.0:8025\n", ["admin.listen: 0.0.0.0:8025 is not a loopback address; the admin API then requires admin.tls"]],
    ["a short admin token", "admin:\n  token: short\n", ["admin.token: the secret must be at least 32 characters, found 5; generate one with: openssl rand -hex 32"]],
    ["two sources for the admin token", `admin:\n  token: ${"a".repeat(40)}\n  token_env: X\n`, ["admin: set only one of admin.token, admin.token_env"]],
    ["an admin token from an unset variable", "admin:\n  token_env: MAILRAVEN_TEST_UNSET_VARIABLE\n", ["admin.token_env: environment variable MAILRAVEN_TEST_UNSET_VARIABLE is not set or empty"]],
    ["an unreadable admin token file", "admin:\n  token_file: /nonexistent/token\n", ["admin.token_file: cannot read /nonexistent/token: ENOENT"]],
    ["a list where a mapping belongs", "- a\n- b\n", ["(top level): expected a mapping, found a list"]],
  ];
  for (const [name, yaml, expected] of bad) {
    test(`${name}: exit 78 with the key path and the fix`, async () => {
      const path = configFile(yaml);
      const r = await run("check-config", "--config", path);
      expect(r.code).toBe(78);
      expect(r.err).toContain(path);
      for (const e of expected) expect(r.err).toContain(e);
      // serve refuses the same file before opening any port.
      const s = await run("serve", "--config", path);
      expect(s.code).toBe(78);
    });
  }

  test("all problems are reported in one run", async () => {
    const r = await run("check-config", "--config", configFile("smtp:\n  max_conections: 5\n  idle_timeout: x\nqueue:\n  inline_max_size: -1\n"));
    expect(r.code).toBe(78);
    expect(r.err.split("\n").filter((l) => l.startsWith("  - "))).toHaveLength(3);
  });

  test("a missing file says how to fix it", async () => {
    const r = await run("check-config", "--config", "/nonexistent/mailraven.yaml");
    expect(r.code).toBe(78);
    expect(r.err).toContain("no such file; pass --config PATH or run with --embedded-config");
  });
});
