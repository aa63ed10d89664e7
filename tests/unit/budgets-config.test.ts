// The settings of issue 9's budgets: their defaults, and a named error with the fix for each bad value.

import { describe, expect, test } from "bun:test";
import { parseConfig, type ParseEnv } from "../../src/config/parse.ts";
import type { Config } from "../../src/config/types.ts";
import { configProblems } from "../helpers/config-problems.ts";

const FILES: Record<string, string> = { "/etc/mailraven/users.txt": "# users\nAlice@Example.org\n\n@sales.example.org # everyone\n" };
const env: ParseEnv = {
  cwd: "/etc/mailraven",
  resolvConf: "",
  readFile: (p) => {
    const text = FILES[p.startsWith("/") ? p : `/etc/mailraven/${p}`];
    if (text === undefined) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
    return text;
  },
};
const parse = (doc: Record<string, unknown>): Config => parseConfig({ hostname: "mx.example.org", ...doc }, env);
const problemsOf = (doc: Record<string, unknown>): readonly string[] => configProblems(parse, doc);

describe("defaults", () => {
  test("IPv6 prefix /64, AUTH 2 at once and 30/1m, greylist 500/1h and 256MiB, authentication 5 + 5 signatures in 10s, verification like Postfix's", () => {
    const c = parse({ submission: { certificates: [{ cert_file: "c.pem", key_file: "c.key" }] }, defenses: { greylist: {}, authentication: {} } });
    expect(c.smtp.ipv6PrefixLength).toBe(64);
    expect(c.submission!.authConcurrency).toBe(2);
    expect(c.submission!.authRateLimit).toEqual({ messages: 30, windowMs: 60_000 });
    expect(c.defenses.greylist!.newTripletsPerNetwork).toEqual({ messages: 500, windowMs: 3_600_000 });
    expect(c.defenses.greylist!.maxDatabaseSize).toBe(256 * 1024 * 1024);
    expect(c.relay.recipients.size).toBe(0);
    expect(c.relay.recipientVerification).toEqual({
      positiveTtlMs: 31 * 86_400_000,
      negativeTtlMs: 3 * 86_400_000,
      positiveRefreshMs: 7 * 86_400_000,
      negativeRefreshMs: 3 * 3_600_000,
      waitMs: 9_000,
      timeoutMs: 30_000,
      unreachable: "defer",
      concurrencyPerHop: 2,
      probesPerHop: { messages: 60, windowMs: 60_000 },
    });
  });

  test('"off" turns the AUTH attempt rate and the greylist network cap off', () => {
    const c = parse({ submission: { certificates: [{ cert_file: "c.pem", key_file: "c.key" }], auth_rate_limit: "off" }, defenses: { greylist: { new_triplets_per_network: "off" } } });
    expect(c.submission!.authRateLimit).toBeNull();
    expect(c.defenses.greylist!.newTripletsPerNetwork).toBeNull();
  });
});

describe("recipient lists", () => {
  test("inline and file entries are merged, lower case; @domain entries kept; comments and blank lines skipped", () => {
    const c = parse({ relay: { domains: { "example.org": { route: "smtp://10.0.0.5", recipients: ["Bob@Example.org"], recipients_file: "users.txt", verify_recipients: true } } } });
    const rules = c.relay.recipients.get("example.org")!;
    expect([...rules.list!].sort()).toEqual(["@sales.example.org", "alice@example.org", "bob@example.org"]);
    expect(rules.verify).toBe(true);
  });

  test("a domain with only verify_recipients has no list; a plain route has no rules", () => {
    const c = parse({ relay: { domains: { "a.example": { route: "smtp://10.0.0.5", verify_recipients: true }, "b.example": "smtp://10.0.0.6" } } });
    expect(c.relay.recipients.get("a.example")).toMatchObject({ list: null, verify: true });
    expect(c.relay.recipients.has("b.example")).toBe(false);
  });

  test("each bad value is named with what to write", () => {
    expect(
      problemsOf({
        relay: {
          domains: { "example.org": { route: "smtp://10.0.0.5", recipients: ["not an address", 5], recipients_file: "missing.txt", verify_recipients: "yes" } },
          recipient_verification: { unreachable: "bounce", probes_per_hop: "lots", concurrency_per_hop: 0, wait: "soon" },
        },
      }),
    ).toEqual([
      'relay.domains.example.org.verify_recipients: expected true or false, found string "yes"',
      'relay.domains.example.org.recipients[0]: expected an address such as "alice@example.org", or "@example.org" for every address of the domain, found string "not an address"',
      'relay.domains.example.org.recipients[1]: expected an address such as "alice@example.org", or "@example.org" for every address of the domain, found number 5',
      "relay.domains.example.org.recipients_file: cannot read missing.txt: ENOENT",
      'relay.recipient_verification.probes_per_hop: expected probes per window such as "60/1m", found string "lots"',
      'relay.recipient_verification.wait: expected a duration such as "30s", "5m" or "1h" of at least 100 ms, found string "soon"',
      'relay.recipient_verification.unreachable: expected one of defer, accept, found string "bounce"',
      "relay.recipient_verification.concurrency_per_hop: expected an integer from 1 to 100, found number 0",
    ]);
  });
});

describe("other bounds", () => {
  test("each bad value is named with what to write", () => {
    expect(
      problemsOf({
        smtp: { ipv6_prefix_length: 129 },
        submission: { certificates: [{ cert_file: "c.pem", key_file: "c.key" }], auth_concurrency: 0, auth_rate_limit: "many" },
        defenses: { greylist: { new_triplets_per_network: "500 per hour", max_database_size: "1KiB" }, authentication: { max_dkim_signatures: 0, max_arc_sets: 51, timeout: "10ms" } },
      }),
    ).toEqual([
      'defenses.greylist.new_triplets_per_network: expected a count per window such as "500/1h" (or "off"), found string "500 per hour"',
      'defenses.greylist.max_database_size: expected a size such as "25MiB" or "512KiB" of at least 16384 bytes, found string "1KiB"',
      "defenses.authentication.max_dkim_signatures: expected an integer from 1 to 50, found number 0",
      "defenses.authentication.max_arc_sets: expected an integer from 1 to 50, found number 51",
      'defenses.authentication.timeout: expected a duration such as "30s", "5m" or "1h" of at least 1000 ms, found string "10ms"',
      "smtp.ipv6_prefix_length: expected an integer from 16 to 128, found number 129",
      "submission.auth_concurrency: expected an integer from 1 to 64, found number 0",
      'submission.auth_rate_limit: expected attempts per window such as "30/1m" (or "off"), found string "many"',
    ]);
  });
});
