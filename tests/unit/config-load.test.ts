import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { loadConfig } from "../../src/config/load.ts";
import { ConfigErrors } from "../../src/config/reader.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-config-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function writeConfig(text: string, dir = join(root, `c${n++}`)): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "mailraven.yaml");
  writeFileSync(path, text);
  return path;
}

function problemsOf(path: string): readonly string[] {
  try {
    loadConfig({ kind: "file", path });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigErrors);
    return (err as ConfigErrors).problems;
  }
  throw new Error("expected loadConfig to reject the file");
}

describe("loadConfig from a file", () => {
  test("an empty file gives the defaults", () => {
    const c = loadConfig({ kind: "file", path: writeConfig("") });
    expect(c.stateDir).toBe("/var/lib/mailraven");
    expect(c.smtp.listen).toEqual([{ host: "0.0.0.0", port: 25 }]);
    expect(c.relay.domains.size).toBe(0);
  });

  test("a file with only comments gives the defaults", () => {
    expect(loadConfig({ kind: "file", path: writeConfig("# nothing here yet\n") }).logLevel).toBe("info");
  });

  test("values are read from the YAML", () => {
    const path = writeConfig(
      [
        "hostname: mx.example.org",
        "smtp:",
        '  listen: ["127.0.0.1:2525", "[::1]:2525"]',
        "  max_message_size: 10MiB",
        "relay:",
        "  domains:",
        "    Example.ORG: lmtp://[2001:db8::5]",
        "  relay_networks: [10.0.0.0/8]",
        "queue:",
        "  retry_schedule: [30s, 5m]",
      ].join("\n"),
    );
    const c = loadConfig({ kind: "file", path });
    expect(c.hostname).toBe("mx.example.org");
    expect(c.smtp.listen).toEqual([
      { host: "127.0.0.1", port: 2525 },
      { host: "::1", port: 2525 },
    ]);
    expect(c.smtp.maxMessageSize).toBe(10 * 1024 * 1024);
    expect(c.relay.domains.get("example.org")).toEqual({ protocol: "lmtp", host: "2001:db8::5", port: 24, uri: "lmtp://[2001:db8::5]" });
    expect(c.relay.relayNetworks.map((x) => x.text)).toEqual(["10.0.0.0/8"]);
    expect(c.queue.retryScheduleMs).toEqual([30_000, 300_000]);
    expect(Object.isFrozen(c)).toBe(true);
  });

  test("relative state_dir and TLS paths are resolved against the config file's directory, not the cwd", () => {
    const dir = join(root, "etc-relay");
    const path = writeConfig("state_dir: ./data\nsmtp:\n  tls:\n    cert_file: tls/cert.pem\n    key_file: tls/key.pem\n", dir);
    const c = loadConfig({ kind: "file", path }, "/somewhere/else");
    expect(c.stateDir).toBe(join(dir, "data"));
    expect(c.smtp.tls).toEqual({ certFile: join(dir, "tls/cert.pem"), keyFile: join(dir, "tls/key.pem") });
  });

  test("a config path given relative to the cwd still resolves state_dir next to the file", () => {
    const dir = join(root, "relative-path");
    const path = writeConfig("state_dir: spool\n", dir);
    const c = loadConfig({ kind: "file", path: relative(process.cwd(), path) });
    expect(c.stateDir).toBe(join(dir, "spool"));
  });

  test("invalid YAML is one problem naming the file once", () => {
    const path = writeConfig("smtp: [\n  listen: 127.0.0.1:25\n");
    const problems = problemsOf(path);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith(`${path}: not valid YAML: `);
    expect(problems[0]!.split(path)).toHaveLength(2);
  });

  test("a missing file names the path and mentions --config", () => {
    const path = join(root, "does-not-exist.yaml");
    const problems = problemsOf(path);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith(`${path}: cannot read the configuration file: no such file`);
    expect(problems[0]).toContain("--config");
  });

  test("every problem is prefixed with the file path and names the key", () => {
    const path = writeConfig("smtp:\n  listen: []\nqueue:\n  retry_schedule: [5m, soon]\nrelay:\n  domains:\n    example.org: http://x\n");
    const problems = problemsOf(path);
    expect(problems).toEqual([
      `${path}: smtp.listen: expected at least one address such as "0.0.0.0:25", found a list`,
      `${path}: relay.domains.example.org: expected a route such as "smtp://10.0.0.5:25" or "lmtp://[2001:db8::5]:24", found string "http://x"`,
      `${path}: queue.retry_schedule[1]: expected a delay of at least "1s" such as "5m", found string "soon"`,
    ]);
  });

  test("unknown key in the file suggests the right one", () => {
    const path = writeConfig("smtp:\n  max_conections: 5\n");
    expect(problemsOf(path)).toEqual([`${path}: smtp.max_conections: unknown key; did you mean "max_connections"?`]);
  });
});

describe("loadConfig embedded", () => {
  test("the embedded default is valid and keeps everything on loopback", () => {
    const c = loadConfig({ kind: "embedded" }, "/opt/trial");
    expect(c.hostname).toBe("mailraven.localhost");
    expect(c.stateDir).toBe("/opt/trial/data");
    expect(c.smtp.listen).toEqual([{ host: "127.0.0.1", port: 2525 }]);
    expect(c.smtp.greetingDelayMs).toBe(0);
    expect(c.relay.domains.get("example.test")).toEqual({ protocol: "smtp", host: "127.0.0.1", port: 2526, uri: "smtp://127.0.0.1:2526" });
    expect(c.relay.relayNetworks.map((x) => x.text)).toEqual(["127.0.0.0/8", "::1/128"]);
    expect(c.relay.smarthost).toBeNull();
    expect(c.queue.retryScheduleMs).toEqual([10_000, 30_000, 60_000, 300_000]);
  });
});
