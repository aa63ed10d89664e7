import { describe, expect, test } from "bun:test";
import { hostname as osHostname } from "node:os";
import { parseConfig } from "../../src/config/parse.ts";
import { ConfigErrors } from "../../src/config/reader.ts";
import type { Config } from "../../src/config/types.ts";

/** The problems parseConfig reports for `doc`; fails the test if it accepts it. */
function problemsOf(doc: unknown): readonly string[] {
  try {
    parseConfig(doc, { cwd: "/etc/mailraven" });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigErrors);
    return (err as ConfigErrors).problems;
  }
  throw new Error("expected parseConfig to reject the document");
}

const parse = (doc: unknown): Config => parseConfig(doc, { cwd: "/etc/mailraven" });
const base = { hostname: "mx.example.org" };

describe("defaults", () => {
  test.each([{}, null, undefined])("an empty document (%p) gives the documented defaults", (doc) => {
    const c = parse(doc);
    expect(c.hostname).toBe(osHostname().toLowerCase());
    expect(c.stateDir).toBe("/var/lib/mailraven");
    expect(c.logLevel).toBe("info");
    expect(c.smtp.listen).toEqual([{ host: "0.0.0.0", port: 25 }]);
    expect(c.smtp.maxConnections).toBe(100);
    expect(c.smtp.maxConnectionsPerIp).toBe(10);
    expect(c.smtp.idleTimeoutMs).toBe(300_000);
    expect(c.smtp.commandTimeoutMs).toBe(30_000);
    expect(c.smtp.maxMessageSize).toBe(25 * 1024 * 1024);
    expect(c.smtp.maxRecipients).toBe(100);
    expect(c.smtp.maxLineLength).toBe(2048);
    expect(c.smtp.greetingDelayMs).toBe(1000);
    expect(c.smtp.greetingAllowlist).toEqual([]);
    expect(c.smtp.shutdownTimeoutMs).toBe(30_000);
    expect(c.smtp.tls).toBeNull();
    expect(c.relay.domains.size).toBe(0);
    expect(c.relay.relayNetworks.map((n) => n.text)).toEqual(["127.0.0.0/8", "::1/128"]);
    expect(c.relay.smarthost).toBeNull();
    expect(c.queue.retryScheduleMs).toEqual(
      [5, 15, 30, 60, 120, 240, 480, 960, 1440, 1440, 1440, 1440].map((m) => m * 60_000),
    );
    expect(c.queue.inlineMaxSize).toBe(128 * 1024);
    expect(c.queue.delayWarningMs).toBe(4 * 3_600_000);
    expect(c.delivery).toEqual({ concurrencyPerRoute: 20, connectTimeoutMs: 30_000, timeoutMs: 300_000, idleConnectionTtlMs: 5_000 });
  });

  test("explicit values replace the defaults, with units converted", () => {
    const c = parse({
      hostname: "MX.Example.ORG",
      log_level: "debug",
      smtp: { listen: ["127.0.0.1:2525", "[::1]:2525"], idle_timeout: "2m", max_message_size: "10MiB", greeting_delay: 0, max_recipients: 5 },
      queue: { retry_schedule: ["10s", 60, "1h"], inline_max_size: "64KiB" },
      delivery: { connect_timeout: "500ms" },
    });
    expect(c.hostname).toBe("mx.example.org");
    expect(c.logLevel).toBe("debug");
    expect(c.smtp.listen).toEqual([
      { host: "127.0.0.1", port: 2525 },
      { host: "::1", port: 2525 },
    ]);
    expect(c.smtp.idleTimeoutMs).toBe(120_000);
    expect(c.smtp.maxMessageSize).toBe(10 * 1024 * 1024);
    expect(c.smtp.greetingDelayMs).toBe(0);
    expect(c.smtp.maxRecipients).toBe(5);
    expect(c.queue.retryScheduleMs).toEqual([10_000, 60_000, 3_600_000]);
    expect(c.queue.inlineMaxSize).toBe(65_536);
    expect(c.delivery.connectTimeoutMs).toBe(500);
    expect(parse({ queue: { delay_warning: 0 } }).queue.delayWarningMs).toBe(0);
    expect(parse({ queue: { delay_warning: "30m" } }).queue.delayWarningMs).toBe(1_800_000);
  });
});

describe("error messages name the key and what was expected", () => {
  test("unknown key with a close match suggests it", () => {
    expect(problemsOf({ ...base, smtp: { max_conections: 5 } })).toEqual([
      'smtp.max_conections: unknown key; did you mean "max_connections"?',
    ]);
    expect(problemsOf({ ...base, relay: { relay_network: ["10.0.0.0/8"] } })).toEqual([
      'relay.relay_network: unknown key; did you mean "relay_networks"?',
    ]);
    expect(problemsOf({ hostnmae: "mx.example.org" })).toEqual(['hostnmae: unknown key; did you mean "hostname"?']);
  });

  test("unknown key without a close match lists the known keys", () => {
    const [p] = problemsOf({ ...base, queue: { something_else: 1 } });
    expect(p).toBe("queue.something_else: unknown key; known keys here: retry_schedule, inline_max_size, delay_warning, min_free_space");
  });

  test("bad duration", () => {
    expect(problemsOf({ ...base, smtp: { idle_timeout: "5 parsecs" } })).toEqual([
      'smtp.idle_timeout: expected a duration such as "30s", "5m" or "1h" of at least 1000 ms, found string "5 parsecs"',
    ]);
    expect(problemsOf({ ...base, delivery: { timeout: "10ms" } })[0]).toStartWith("delivery.timeout: expected a duration");
    expect(problemsOf({ ...base, smtp: { greeting_delay: [1] } })).toEqual([
      'smtp.greeting_delay: expected a duration such as "30s", "5m" or "1h", found a list',
    ]);
  });

  test("bad size", () => {
    expect(problemsOf({ ...base, smtp: { max_message_size: "lots" } })).toEqual([
      'smtp.max_message_size: expected a size such as "25MiB" or "512KiB" of at least 1024 bytes, found string "lots"',
    ]);
    expect(problemsOf({ ...base, queue: { inline_max_size: "1TiB" } })[0]).toStartWith(
      "queue.inline_max_size: expected a size",
    );
  });

  test("bad integer", () => {
    expect(problemsOf({ ...base, smtp: { max_connections: 0 } })).toEqual([
      "smtp.max_connections: expected an integer from 1 to 100000, found number 0",
    ]);
    expect(problemsOf({ ...base, smtp: { max_line_length: 100 } })).toEqual([
      "smtp.max_line_length: expected an integer from 512 to 1048576, found number 100",
    ]);
    expect(problemsOf({ ...base, delivery: { concurrency_per_route: "ten" } })).toEqual([
      'delivery.concurrency_per_route: expected an integer from 1 to 1000, found string "ten"',
    ]);
  });

  test("bad route", () => {
    expect(problemsOf({ ...base, relay: { domains: { "example.org": "http://x" } } })).toEqual([
      'relay.domains.example.org: expected a route such as "smtp://10.0.0.5:25" or "lmtp://[2001:db8::5]:24", found string "http://x"',
    ]);
    for (const bad of ["smtp://", "smtp://host:0", "smtp://host:65536", "smtp://host/path", "10.0.0.5:25", "smtp://a b"]) {
      expect(problemsOf({ ...base, relay: { domains: { "example.org": bad } } })).toEqual([
        `relay.domains.example.org: expected a route such as "smtp://10.0.0.5:25" or "lmtp://[2001:db8::5]:24", found string ${JSON.stringify(bad)}`,
      ]);
    }
    expect(problemsOf({ ...base, relay: { smarthost: "ftp://relay.example.net" } })[0]).toStartWith(
      "relay.smarthost: expected a route",
    );
  });

  test("bad domain name", () => {
    expect(problemsOf({ ...base, relay: { domains: { "bad_domain!": "smtp://10.0.0.5" } } })).toEqual([
      'relay.domains.bad_domain!: "bad_domain!" is not a valid domain name',
    ]);
    expect(problemsOf({ ...base, relay: { domains: { "*.example.org": "smtp://10.0.0.5" } } })).toEqual([
      'relay.domains.*.example.org: "*.example.org" is not a valid domain name',
    ]);
  });

  test("relay.domains must be a mapping", () => {
    expect(problemsOf({ ...base, relay: { domains: ["example.org"] } })).toEqual([
      'relay.domains: expected a mapping of domain to route, e.g. "example.org: smtp://10.0.0.5:25", found a list',
    ]);
  });

  test("bad CIDR in relay.relay_networks names its index", () => {
    expect(problemsOf({ ...base, relay: { relay_networks: ["10.0.0.0/8", "2001:db8::/129", "1.2.3.4/33"] } })).toEqual([
      'relay.relay_networks[1]: expected an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32", found string "2001:db8::/129"',
      'relay.relay_networks[2]: expected an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32", found string "1.2.3.4/33"',
    ]);
    expect(problemsOf({ ...base, smtp: { greeting_allowlist: [5] } })).toEqual([
      'smtp.greeting_allowlist[0]: expected an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32", found number 5',
    ]);
  });

  test("relay_networks that is not a list", () => {
    expect(problemsOf({ ...base, relay: { relay_networks: "10.0.0.0/8" } })).toEqual([
      'relay.relay_networks: expected a list, found string "10.0.0.0/8"',
    ]);
  });

  test("empty listen list", () => {
    expect(problemsOf({ ...base, smtp: { listen: [] } })).toEqual([
      'smtp.listen: expected at least one address such as "0.0.0.0:25", found a list',
    ]);
  });

  test("listen entry without a port", () => {
    expect(problemsOf({ ...base, smtp: { listen: ["127.0.0.1:25", "0.0.0.0"] } })).toEqual([
      'smtp.listen[1]: expected an address such as "0.0.0.0:25" or "[::]:25", found string "0.0.0.0"',
    ]);
  });

  test("a bad delay_warning names the key and the form", () => {
    expect(problemsOf({ ...base, queue: { delay_warning: "soon" } })).toEqual([
      'queue.delay_warning: expected a duration such as "30s", "5m" or "1h", found string "soon"',
    ]);
  });

  test("bad retry_schedule entry names its index", () => {
    expect(problemsOf({ ...base, queue: { retry_schedule: ["5m", "soon", "10m"] } })).toEqual([
      'queue.retry_schedule[1]: expected a delay of at least "1s" such as "5m", found string "soon"',
    ]);
    expect(problemsOf({ ...base, queue: { retry_schedule: ["5m", "10m", "500ms"] } })).toEqual([
      'queue.retry_schedule[2]: expected a delay of at least "1s" such as "5m", found string "500ms"',
    ]);
    expect(problemsOf({ ...base, queue: { retry_schedule: [] } })).toEqual([
      "queue.retry_schedule: expected at least one delay, found a list",
    ]);
  });

  test("tls with a missing key_file", () => {
    expect(problemsOf({ ...base, smtp: { tls: { cert_file: "cert.pem" } } })).toEqual([
      "smtp.tls.key_file: expected the path of a PEM private key, found nothing",
    ]);
    expect(problemsOf({ ...base, smtp: { tls: { key_file: "key.pem" } } })).toEqual([
      "smtp.tls.cert_file: expected the path of a PEM certificate chain, found nothing",
    ]);
  });

  test("bad log level and bad hostname", () => {
    expect(problemsOf({ ...base, log_level: "verbose" })).toEqual([
      'log_level: expected one of debug, info, warn, error, found string "verbose"',
    ]);
    expect(problemsOf({ hostname: "mx_1.example.org" })).toEqual([
      'hostname: expected a fully qualified host name such as mx.example.org, found string "mx_1.example.org"',
    ]);
  });

  test("a section that is not a mapping", () => {
    expect(problemsOf({ ...base, smtp: ["0.0.0.0:25"] })).toEqual(["smtp: expected a mapping, found a list"]);
    expect(problemsOf(["hostname"])).toEqual(["(top level): expected a mapping, found a list"]);
    expect(problemsOf("hostname: x")).toEqual(['(top level): expected a mapping, found string "hostname: x"']);
  });

  test("several errors are reported at once", () => {
    const problems = problemsOf({
      hostname: "mx.example.org",
      smtp: { listen: [], idle_timeout: "forever", max_conections: 5 },
      relay: { domains: { "example.org": "http://x" }, relay_networks: ["256.1.1.1/8"] },
      queue: { retry_schedule: ["5m", "never"] },
    });
    expect(problems).toHaveLength(6);
    const keys = problems.map((p) => p.slice(0, p.indexOf(":")));
    expect(keys.sort()).toEqual(
      [
        "queue.retry_schedule[1]",
        "relay.domains.example.org",
        "relay.relay_networks[0]",
        "smtp.idle_timeout",
        "smtp.listen",
        "smtp.max_conections",
      ].sort(),
    );
  });

  test("ConfigErrors' message lists every problem", () => {
    try {
      parse({ smtp: { listen: [] }, queue: { retry_schedule: ["x"] } });
      throw new Error("expected a ConfigErrors");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigErrors);
      const message = (err as Error).message;
      expect(message).toStartWith("invalid configuration:\n");
      expect(message).toContain("\n  - smtp.listen: ");
      expect(message).toContain("\n  - queue.retry_schedule[0]: ");
    }
  });
});

describe("paths", () => {
  test("relative state_dir and TLS files are resolved against the given directory", () => {
    const c = parseConfig({ ...base, state_dir: "./data", smtp: { tls: { cert_file: "tls/cert.pem", key_file: "/abs/key.pem" } } }, { cwd: "/srv/relay" });
    expect(c.stateDir).toBe("/srv/relay/data");
    expect(c.smtp.tls).toEqual({ certFile: "/srv/relay/tls/cert.pem", keyFile: "/abs/key.pem" });
  });

  test("absolute state_dir is kept", () => {
    expect(parseConfig({ ...base, state_dir: "/var/spool/raven/" }, { cwd: "/srv" }).stateDir).toBe("/var/spool/raven");
  });
});

describe("relay domains and routes", () => {
  test("domains are lower-cased, trailing dot dropped, IDN converted to punycode", () => {
    const c = parse({
      ...base,
      relay: { domains: { "Example.ORG": "smtp://10.0.0.5", "bücher.example.": "smtp://10.0.0.6", "MÜNCHEN.example": "smtp://10.0.0.7" } },
    });
    expect([...c.relay.domains.keys()].sort()).toEqual(["example.org", "xn--bcher-kva.example", "xn--mnchen-3ya.example"]);
    expect(c.relay.domains.get("xn--bcher-kva.example")?.host).toBe("10.0.0.6");
  });

  test("default ports: smtp 25, lmtp 24", () => {
    const c = parse({ ...base, relay: { domains: { "a.example": "smtp://mx.a.example", "b.example": "lmtp://10.0.0.9" } } });
    expect(c.relay.domains.get("a.example")).toEqual({ protocol: "smtp", host: "mx.a.example", port: 25, uri: "smtp://mx.a.example" });
    expect(c.relay.domains.get("b.example")).toEqual({ protocol: "lmtp", host: "10.0.0.9", port: 24, uri: "lmtp://10.0.0.9" });
  });

  test("explicit port, [IPv6]:port, scheme case and trailing slash", () => {
    const c = parse({
      ...base,
      relay: {
        domains: {
          "a.example": "smtp://10.0.0.5:2525",
          "b.example": "lmtp://[2001:db8::5]:24",
          "c.example": "LMTP://[::1]",
          "d.example": "smtp://mx.d.example:587/",
        },
      },
    });
    expect(c.relay.domains.get("a.example")).toMatchObject({ protocol: "smtp", host: "10.0.0.5", port: 2525 });
    expect(c.relay.domains.get("b.example")).toEqual({ protocol: "lmtp", host: "2001:db8::5", port: 24, uri: "lmtp://[2001:db8::5]:24" });
    expect(c.relay.domains.get("c.example")).toMatchObject({ protocol: "lmtp", host: "::1", port: 24 });
    expect(c.relay.domains.get("d.example")).toMatchObject({ protocol: "smtp", host: "mx.d.example", port: 587 });
  });

  test("smarthost", () => {
    expect(parse({ ...base, relay: { smarthost: "smtp://[2001:db8::25]:587" } }).relay.smarthost).toEqual({
      protocol: "smtp",
      host: "2001:db8::25",
      port: 587,
      uri: "smtp://[2001:db8::25]:587",
    });
    expect(parse({ ...base, relay: { smarthost: null } }).relay.smarthost).toBeNull();
  });

  test("?tls= sets a configured route's STARTTLS policy and is part of its name; anything else is refused", () => {
    const c = parse({ ...base, relay: { domains: { "a.example": "smtp://relay.a.example:25?tls=verify", "b.example": "lmtp://10.0.0.9?tls=none" }, smarthost: "smtp://[2001:db8::25]:587/?tls=required" } });
    expect(c.relay.domains.get("a.example")).toEqual({ protocol: "smtp", host: "relay.a.example", port: 25, uri: "smtp://relay.a.example:25?tls=verify", tls: "verify" });
    expect(c.relay.domains.get("b.example")).toMatchObject({ port: 24, uri: "lmtp://10.0.0.9?tls=none", tls: "none" });
    expect(c.relay.smarthost).toEqual({ protocol: "smtp", host: "2001:db8::25", port: 587, uri: "smtp://[2001:db8::25]:587?tls=required", tls: "required" });
    expect(parse({ ...base, relay: { smarthost: "smtp://10.0.0.6" } }).relay.smarthost).not.toHaveProperty("tls");
    expect(problemsOf({ ...base, relay: { domains: { "a.example": "smtp://10.0.0.5?tls=strict" } } })).toEqual([
      'relay.domains.a.example: expected ?tls= one of none, opportunistic, required, verify, found string "smtp://10.0.0.5?tls=strict"',
    ]);
    expect(problemsOf({ ...base, relay: { smarthost: "smtp://10.0.0.5?auth=plain" } })).toEqual([
      'relay.smarthost: expected a route whose only option is ?tls=none|opportunistic|required|verify (found "auth"), found string "smtp://10.0.0.5?auth=plain"',
    ]);
  });

  test("relay_networks parsed to CIDRs", () => {
    const c = parse({ ...base, relay: { relay_networks: ["10.0.0.0/8", " 2001:db8::/32 ", "192.0.2.1"] } });
    expect(c.relay.relayNetworks.map((n) => [n.v6, n.bits])).toEqual([
      [false, 8],
      [true, 32],
      [false, 32],
    ]);
  });
});

describe("the returned config is frozen", () => {
  const c = parse({
    ...base,
    smtp: { listen: ["127.0.0.1:25"], tls: { cert_file: "/c.pem", key_file: "/k.pem" } },
    relay: { domains: { "example.org": "smtp://10.0.0.5" }, smarthost: "smtp://10.0.0.6" },
  });

  test("objects and arrays at every level", () => {
    for (const v of [c, c.smtp, c.smtp.listen, c.smtp.listen[0], c.smtp.tls, c.relay, c.relay.relayNetworks, c.relay.relayNetworks[0], c.relay.smarthost, c.queue, c.queue.retryScheduleMs, c.delivery, c.relay.domains.get("example.org")]) {
      expect(Object.isFrozen(v)).toBe(true);
    }
  });

  test("assignments throw", () => {
    const mutable = c as unknown as { hostname: string; smtp: { maxConnections: number; listen: unknown[] }; queue: { retryScheduleMs: number[] } };
    expect(() => (mutable.hostname = "evil.example")).toThrow(TypeError);
    expect(() => (mutable.smtp.maxConnections = 1)).toThrow(TypeError);
    expect(() => mutable.smtp.listen.push({ host: "0.0.0.0", port: 25 })).toThrow(TypeError);
    expect(() => (mutable.queue.retryScheduleMs[0] = 1)).toThrow(TypeError);
    expect(c.hostname).toBe("mx.example.org");
  });

  test("the domains map cannot be changed", () => {
    const domains = c.relay.domains as Map<string, unknown>;
    expect(() => domains.set("evil.example", { protocol: "smtp", host: "x", port: 25, uri: "smtp://x" })).toThrow(TypeError);
    expect(() => domains.delete("example.org")).toThrow(TypeError);
    expect(() => domains.clear()).toThrow(TypeError);
    expect([...c.relay.domains.keys()]).toEqual(["example.org"]);
  });
});

describe("submission.rate_limit", () => {
  const cert = { cert_file: "/c.pem", key_file: "/k.pem" };
  const sub = (rate: unknown) => parseConfig({ submission: { certificates: [cert], ...(rate === undefined ? {} : { rate_limit: rate }) } }, { cwd: "/etc/mailraven" }).submission!;
  test("defaults to 1000 a day, takes a rate, and 'off' turns it off", () => {
    expect(sub(undefined).rateLimit).toEqual({ messages: 1000, windowMs: 86_400_000 });
    expect(sub("50/1h").rateLimit).toEqual({ messages: 50, windowMs: 3_600_000 });
    expect(sub("off").rateLimit).toBeNull();
  });
});
