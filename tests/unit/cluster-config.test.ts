// The cluster section and smtp.proxy_protocol (src/config/cluster.ts) through parseConfig, and
// what check-config shows of them (src/config/display.ts): never the Redis password.

import { describe, expect, test } from "bun:test";
import { effectiveConfig } from "../../src/config/display.ts";
import { parseConfig, type ParseEnv } from "../../src/config/parse.ts";
import { configProblems } from "../helpers/config-problems.ts";

const files: Record<string, string> = { "/etc/mailraven/redis.password": "s3cret:with@odd/chars\n" };
const ENV: ParseEnv = { cwd: "/etc/mailraven", resolvConf: "nameserver 192.0.2.53\n", vars: { REDIS_PASSWORD: "from-env" }, readFile: (p) => files[p] ?? (() => { throw Object.assign(new Error("no"), { code: "ENOENT" }); })() };
const parse = (doc: Record<string, unknown>) => parseConfig({ hostname: "mx.example.org", ...doc }, ENV);

const problemsOf = (doc: Record<string, unknown>): readonly string[] => configProblems(parse, doc);

describe("cluster", () => {
  test("off by default, and off unless enabled is true: a single node needs nothing", () => {
    expect(parse({}).cluster).toBeNull();
    expect(parse({ cluster: { enabled: false, redis: "redis://10.0.0.9:6379" } }).cluster).toBeNull();
    expect(effectiveConfig(parse({})).cluster).toEqual({ enabled: false });
  });

  test("defaults when enabled: local Redis, the mailraven: prefix, the host name, 250 ms, fallback local everywhere", () => {
    const c = parse({ cluster: { enabled: true } }).cluster!;
    expect(c).toMatchObject({ url: "redis://127.0.0.1:6379", keyPrefix: "mailraven:", timeoutMs: 250, refreshIntervalMs: 10_000, heartbeatMs: 5_000, password: null, caFile: null });
    expect(c.nodeName.length).toBeGreaterThan(0);
    expect(c.fallback).toEqual({ greylist: "local", rate_limits: "local", connection_rate: "local", auth_failures: "local" });
  });

  test("the password from a file or an environment variable goes into the URL for the client, and check-config shows only where it came from", () => {
    const fromFile = parse({ cluster: { enabled: true, redis: "rediss://redis.internal:6380/2", password_file: "/etc/mailraven/redis.password", ca_file: "ca.pem", fallback: { greylist: "open" } } });
    expect(fromFile.cluster!.url).toBe("rediss://:s3cret%3Awith%40odd%2Fchars@redis.internal:6380/2");
    expect(fromFile.cluster!.caFile).toBe("/etc/mailraven/ca.pem");
    const shown = JSON.stringify(effectiveConfig(fromFile));
    expect(shown).not.toContain("s3cret");
    expect(effectiveConfig(fromFile).cluster).toMatchObject({ redis: "rediss://redis.internal:6380/2", password: "(redacted, from file /etc/mailraven/redis.password)", fallback: { greylist: "open", rate_limits: "local" } });
    const fromEnv = parse({ cluster: { enabled: true, password_env: "REDIS_PASSWORD" } });
    expect(fromEnv.cluster!.url).toBe("redis://:from-env@127.0.0.1:6379");
    expect(JSON.stringify(effectiveConfig(fromEnv))).not.toContain("from-env");
  });

  test("a password written in the URL is redacted too", () => {
    const c = parse({ cluster: { enabled: true, redis: "redis://app:hunter2@10.0.0.9:6379/0" } });
    expect(c.cluster!.url).toBe("redis://app:hunter2@10.0.0.9:6379/0");
    expect(effectiveConfig(c).cluster).toMatchObject({ redis: "redis://app:redacted@10.0.0.9:6379/0", password: null });
    expect(JSON.stringify(effectiveConfig(c))).not.toContain("hunter2");
  });

  test("every mistake is named with its key and the fix", () => {
    const problems = problemsOf({
      cluster: {
        enabled: true,
        redis: "http://user:pw@10.0.0.9:6379",
        password_file: "/missing",
        key_prefix: "has space",
        node_name: "no/slash",
        timeout: "10s",
        refresh_interval: "10ms",
        fallback: { greylist: "maybe", rate_limit: "open" },
        colour: "blue",
      },
    });
    expect(problems).toContain('cluster.redis: expected a URL such as "redis://10.0.0.9:6379/0" or "rediss://redis.internal:6380" (TLS), found string "http://(redacted)@10.0.0.9:6379"');
    expect(problems.join("\n")).not.toContain(":pw@");
    expect(problems).toContain("cluster.password_file: cannot read /missing: ENOENT");
    expect(problems.some((p) => p.startsWith("cluster.key_prefix: expected a key prefix without spaces"))).toBe(true);
    expect(problems.some((p) => p.startsWith("cluster.node_name: expected a name of letters"))).toBe(true);
    expect(problems.some((p) => p.startsWith('cluster.timeout: expected a duration of at most "5s"'))).toBe(true);
    expect(problems.some((p) => p.startsWith("cluster.refresh_interval: expected a duration"))).toBe(true);
    expect(problems).toContain('cluster.fallback.greylist: expected one of local, open, found string "maybe"');
    expect(problems).toContain('cluster.fallback.rate_limit: unknown key; did you mean "rate_limits"?');
    expect(problems.some((p) => p.startsWith("cluster.colour: unknown key"))).toBe(true);
  });

  test("one password only; ca_file only with rediss://", () => {
    expect(problemsOf({ cluster: { enabled: true, redis: "redis://:a@10.0.0.9", password_env: "REDIS_PASSWORD" } })).toEqual([
      "cluster.redis: the URL carries a password and cluster.password* is set too; keep one (better password_file)",
    ]);
    expect(problemsOf({ cluster: { enabled: true, password: "x", password_env: "REDIS_PASSWORD" } })).toEqual(["cluster: set only one of cluster.password, cluster.password_env"]);
    expect(problemsOf({ cluster: { enabled: true, ca_file: "/ca.pem" } })).toEqual(["cluster.ca_file: only used with a rediss:// URL (TLS); found redis://"]);
  });
});

describe("smtp.proxy_protocol", () => {
  test("off by default; trusted load balancers as networks; a bad entry is named", () => {
    expect(parse({}).smtp.proxyProtocol.trusted).toEqual([]);
    const c = parse({ smtp: { proxy_protocol: { trusted: ["10.0.0.2", "2001:db8::/64"] } } });
    expect(effectiveConfig(c).smtp).toMatchObject({ proxy_protocol: { trusted: ["10.0.0.2", "2001:db8::/64"] } });
    expect(problemsOf({ smtp: { proxy_protocol: { trusted: ["lb.example"], send: true } } })).toEqual([
      'smtp.proxy_protocol.send: unknown key; known keys here: trusted',
      'smtp.proxy_protocol.trusted[0]: expected the address or network of a load balancer, such as "10.0.0.2/32", found string "lb.example"',
    ]);
  });
});
