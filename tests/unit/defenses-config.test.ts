// The dns, defenses and pipeline sections (src/config/defenses.ts), through parseConfig as
// mailraven reads them, plus the DNS list syntax on its own.

import { describe, expect, test } from "bun:test";
import { parseZone } from "../../src/config/defenses.ts";
import { parseConfig, type ParseEnv } from "../../src/config/parse.ts";
import type { Config } from "../../src/config/types.ts";
import { configProblems } from "../helpers/config-problems.ts";

/** A fixed resolv.conf so no test depends on the machine's /etc/resolv.conf. */
const ENV: ParseEnv = { cwd: "/etc/mailraven", resolvConf: "nameserver 192.0.2.53\n" };
const base = { hostname: "mx.example.org" };
const parse = (doc: Record<string, unknown>, env: ParseEnv = ENV): Config => parseConfig({ ...base, ...doc }, env);

const problemsOf = (doc: Record<string, unknown>): readonly string[] => configProblems(parse, doc);

describe("parseZone (Postfix's zone[=filter][*weight])", () => {
  test("a bare zone matches any answer with weight 1", () => {
    expect(parseZone("zen.spamhaus.org")).toEqual({ spec: "zen.spamhaus.org", zone: "zen.spamhaus.org", filter: null, weight: 1 });
  });

  test("a filter of single octets and [min..max] ranges, and a weight", () => {
    expect(parseZone("Zen.Spamhaus.ORG=127.0.0.[2..11]*3")).toEqual({
      spec: "Zen.Spamhaus.ORG=127.0.0.[2..11]*3",
      zone: "zen.spamhaus.org",
      filter: [
        [127, 127],
        [0, 0],
        [0, 0],
        [2, 11],
      ],
      weight: 3,
    });
    expect(parseZone("b.barracudacentral.org=127.0.0.2*2")).toMatchObject({ filter: [[127, 127], [0, 0], [0, 0], [2, 2]], weight: 2 });
  });

  test("a negative weight makes an allowlist; ranges may cover a whole octet", () => {
    expect(parseZone("list.dnswl.org=127.0.[0..255].[1..3]*-2")).toEqual({
      spec: "list.dnswl.org=127.0.[0..255].[1..3]*-2",
      zone: "list.dnswl.org",
      filter: [
        [127, 127],
        [0, 0],
        [0, 255],
        [1, 3],
      ],
      weight: -2,
    });
  });

  test("a weight without a filter", () => {
    expect(parseZone("weak.test*5")).toEqual({ spec: "weak.test*5", zone: "weak.test", filter: null, weight: 5 });
  });

  test.each([
    ["five octets", "zen.test=127.0.0.0.2"],
    ["three octets", "zen.test=127.0.0"],
    ["a range running backwards", "zen.test=127.0.0.[11..2]"],
    ["an octet over 255", "zen.test=127.0.0.256"],
    ["a range ending over 255", "zen.test=127.0.0.[2..256]"],
    ["a dash instead of ..", "zen.test=127.0.0.[2-11]"],
    ["a trailing dot in the filter", "zen.test=127.0.0.2."],
    ["no zone before the filter", "=127.0.0.2"],
    ["no zone before the weight", "*3"],
    ["an empty spec", ""],
    ["a weight that is not a number", "zen.test*x"],
    ["an empty weight", "zen.test*"],
    ["a space in the zone", "zen test"],
  ])("%s is refused: %p", (_what, spec) => {
    expect(parseZone(spec)).toBeNull();
  });
});

describe("defaults", () => {
  test("without the sections: no optional defense but the blocklist and a 30/min connection rate", () => {
    const c = parse({});
    expect(c.defenses).toEqual({
      allowlist: [],
      blocklist: [],
      connectionRate: 30,
      dnsbl: null,
      greylist: null,
      rateLimits: { perIp: null, perSenderDomain: null },
      authentication: null,
      spamd: null,
      clamd: null,
    });
    expect(c.pipeline).toEqual({ connect: ["blocklist", "connection_rate"], mail: [], rcpt: [], content: [] });
    expect(c.domainPolicy.size).toBe(0);
  });

  test("every configured check runs, in the documented order whatever the order of the keys", () => {
    const c = parse({
      defenses: {
        spamd: null,
        clamd: {},
        greylist: {},
        dnsbl: { zones: ["zen.test"] },
        authentication: null,
        rate_limits: { per_sender_domain: "10/1m" },
      },
    });
    expect(c.pipeline).toEqual({
      connect: ["blocklist", "connection_rate", "dnsbl"],
      mail: ["rate_limit"],
      rcpt: ["greylist"],
      content: ["authentication", "clamd", "spamd"],
    });
  });

  test("connection_rate: 0 turns the connection rate check off", () => {
    const c = parse({ defenses: { connection_rate: 0 } });
    expect(c.defenses.connectionRate).toBe(0);
    expect(c.pipeline.connect).toEqual(["blocklist"]);
  });
});

describe("greylist switch", () => {
  test("`greylist:` with no value switches it on with its defaults", () => {
    const c = parse({ defenses: { greylist: null } });
    expect(c.defenses.greylist).toEqual({
      delayMs: 300_000,
      retryWindowMs: 4 * 3_600_000,
      passTtlMs: 36 * 86_400_000,
      autoAllowlistAfter: 5,
      allowClients: [],
      allowSenders: [],
      allowRecipients: [],
      newTripletsPerNetwork: { messages: 500, windowMs: 3_600_000 },
      maxDatabaseSize: 256 * 1024 * 1024,
    });
    expect(c.pipeline.rcpt).toEqual(["greylist"]);
  });

  test("`greylist: false` turns it off", () => {
    const c = parse({ defenses: { greylist: false } });
    expect(c.defenses.greylist).toBeNull();
    expect(c.pipeline.rcpt).toEqual([]);
  });

  test("explicit settings, allowlist entries lower-cased", () => {
    const g = parse({
      defenses: {
        greylist: {
          delay: "1m",
          retry_window: "2h",
          pass_ttl: "7d",
          auto_allowlist_after: 0,
          allow_clients: ["198.51.100.0/24", "2001:db8::/32"],
          allow_senders: ["Partner.Example"],
          allow_recipients: ["Postmaster@Example.ORG", "abuse.example"],
        },
      },
    }).defenses.greylist!;
    expect(g.delayMs).toBe(60_000);
    expect(g.retryWindowMs).toBe(7_200_000);
    expect(g.passTtlMs).toBe(7 * 86_400_000);
    expect(g.autoAllowlistAfter).toBe(0);
    expect(g.allowClients.map((c) => c.text)).toEqual(["198.51.100.0/24", "2001:db8::/32"]);
    expect(g.allowSenders).toEqual(["partner.example"]);
    expect(g.allowRecipients).toEqual(["postmaster@example.org", "abuse.example"]);
  });

  test("bad greylist settings are named", () => {
    expect(
      problemsOf({ defenses: { greylist: { retry_window: "30s", allow_senders: ["not a domain"], allow_clients: ["192.0.2.0/33"], dealy: "5m" } } }),
    ).toEqual([
      'defenses.greylist.dealy: unknown key; did you mean "delay"?',
      'defenses.greylist.retry_window: expected a duration such as "30s", "5m" or "1h" of at least 60000 ms, found string "30s"',
      'defenses.greylist.allow_clients[0]: expected an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32", found string "192.0.2.0/33"',
      'defenses.greylist.allow_senders[0]: expected a sender domain such as "example.org", found string "not a domain"',
    ]);
  });

  test("allow_senders takes domains only: an address there would never match", () => {
    expect(problemsOf({ defenses: { greylist: { allow_senders: ["alice@partner.example", "partner.example"] } } })).toEqual([
      'defenses.greylist.allow_senders[0]: expected a sender domain such as "example.org", found string "alice@partner.example"',
    ]);
  });

  test("allow_recipients takes an address or a domain, not an empty local part", () => {
    const expected = 'a recipient address or domain such as "postmaster@example.org" or "example.org"';
    expect(problemsOf({ defenses: { greylist: { allow_recipients: ["@example.org", "a b@example.org", "postmaster@example.org", "example.org"] } } })).toEqual([
      `defenses.greylist.allow_recipients[0]: expected ${expected}, found string "@example.org"`,
      `defenses.greylist.allow_recipients[1]: expected ${expected}, found string "a b@example.org"`,
    ]);
  });
});

describe("dnsbl section", () => {
  test("zones, threshold and negative_ttl", () => {
    const d = parse({ defenses: { dnsbl: { zones: ["zen.test=127.0.0.[2..11]*3", "wl.test*-2"], threshold: 2, negative_ttl: "1m" } } }).defenses.dnsbl!;
    expect(d.zones.map((z) => [z.zone, z.weight])).toEqual([
      ["zen.test", 3],
      ["wl.test", -2],
    ]);
    expect(d.threshold).toBe(2);
    expect(d.negativeTtlMs).toBe(60_000);
  });

  test("threshold defaults to 1 and negative_ttl to 5 minutes", () => {
    const d = parse({ defenses: { dnsbl: { zones: ["zen.test"] } } }).defenses.dnsbl!;
    expect(d.threshold).toBe(1);
    expect(d.negativeTtlMs).toBe(300_000);
  });

  test("a bad zone is named with the expected syntax", () => {
    expect(problemsOf({ defenses: { dnsbl: { zones: ["zen.test", "zen.test=127.0.0.[11..2]"] } } })).toEqual([
      'defenses.dnsbl.zones[1]: expected a DNS list such as "zen.spamhaus.org=127.0.0.[2..11]*3" (zone, optional =answer filter, optional *weight), found string "zen.test=127.0.0.[11..2]"',
    ]);
  });

  test("the section needs at least one zone", () => {
    expect(problemsOf({ defenses: { dnsbl: null } })).toEqual(["defenses.dnsbl.zones: expected at least one DNS list, found nothing"]);
    expect(problemsOf({ defenses: { dnsbl: { zones: [] } } })).toEqual(["defenses.dnsbl.zones: expected at least one DNS list, found a list"]);
  });
});

describe("rate_limits section", () => {
  test("messages per window; off, 0 or absent turns one off", () => {
    expect(parse({ defenses: { rate_limits: { per_ip: "100/1h", per_sender_domain: " 5 / 30s " } } }).defenses.rateLimits).toEqual({
      perIp: { messages: 100, windowMs: 3_600_000 },
      perSenderDomain: { messages: 5, windowMs: 30_000 },
    });
    expect(parse({ defenses: { rate_limits: { per_ip: "off", per_sender_domain: 0 } } }).defenses.rateLimits).toEqual({ perIp: null, perSenderDomain: null });
    expect(parse({ defenses: { rate_limits: { per_ip: "off" } } }).pipeline.mail).toEqual([]);
  });

  test.each(["100", "0/1h", "100/soon", 100])("%p is refused", (value) => {
    expect(problemsOf({ defenses: { rate_limits: { per_ip: value } } })).toEqual([
      `defenses.rate_limits.per_ip: expected messages per window such as "100/1h" (or "off"), found ${typeof value} ${JSON.stringify(value)}`,
    ]);
  });
});

describe("other defenses", () => {
  test("allowlist and blocklist are networks", () => {
    const d = parse({ defenses: { allowlist: ["10.0.0.0/8"], blocklist: ["192.0.2.7", "2001:db8::/32"] } }).defenses;
    expect(d.allowlist.map((c) => c.text)).toEqual(["10.0.0.0/8"]);
    expect(d.blocklist.map((c) => c.text)).toEqual(["192.0.2.7", "2001:db8::/32"]);
    expect(problemsOf({ defenses: { blocklist: ["example.org"] } })).toEqual([
      'defenses.blocklist[0]: expected an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32", found string "example.org"',
    ]);
  });

  test("authentication defaults to the host name as authserv-id and tag/reject/defer", () => {
    expect(parse({ hostname: "MX.Example.ORG", defenses: { authentication: null } }).defenses.authentication).toEqual({
      authservId: "mx.example.org",
      policy: { spfFail: "tag", dmarcReject: true, tempError: "defer" },
      maxDkimSignatures: 5,
      maxArcSets: 5,
      timeoutMs: 10_000,
    });
  });

  test("spamd and clamd defaults; an address is a unix socket or host:port", () => {
    const d = parse({ defenses: { spamd: {}, clamd: null } }).defenses;
    expect(d.spamd).toEqual({ target: { host: "127.0.0.1", port: 783 }, timeoutMs: 30_000, tagScore: 5, rejectScore: 10 });
    expect(d.clamd).toEqual({ target: { path: "/run/clamav/clamd.ctl" }, timeoutMs: 30_000 });
    expect(parse({ defenses: { clamd: { address: "[::1]:3310" } } }).defenses.clamd!.target).toEqual({ host: "::1", port: 3310 });
    expect(problemsOf({ defenses: { spamd: { address: "spamd", reject_score: "high" } } })).toEqual([
      'defenses.spamd.address: expected a unix socket path such as "/run/clamav/clamd.ctl" or host:port such as "127.0.0.1:783", found string "spamd"',
      'defenses.spamd.reject_score: expected a number such as 5 or 7.5, found string "high"',
    ]);
  });
});

describe("pipeline section", () => {
  test("a stage's list sets which checks run and in what order; other stages keep their defaults", () => {
    const c = parse({ defenses: { dnsbl: { zones: ["zen.test"] }, greylist: {} }, pipeline: { connect: ["dnsbl", "blocklist"] } });
    expect(c.pipeline).toEqual({ connect: ["dnsbl", "blocklist"], mail: [], rcpt: ["greylist"], content: [] });
  });

  test("an empty list turns a stage's checks off", () => {
    const c = parse({ defenses: { greylist: {} }, pipeline: { connect: [], rcpt: [] } });
    expect(c.pipeline.connect).toEqual([]);
    expect(c.pipeline.rcpt).toEqual([]);
    expect(c.defenses.greylist).not.toBeNull();
  });

  test("listing a check whose section is not configured is an error naming the section", () => {
    expect(
      problemsOf({
        defenses: { connection_rate: 0 },
        pipeline: { connect: ["blocklist", "connection_rate", "dnsbl"], mail: ["rate_limit"], rcpt: ["greylist"], content: ["authentication", "spamd"] },
      }),
    ).toEqual([
      'pipeline.connect[1]: "connection_rate" is listed but defenses.connection_rate is not configured',
      'pipeline.connect[2]: "dnsbl" is listed but defenses.dnsbl is not configured',
      'pipeline.mail[0]: "rate_limit" is listed but defenses.rate_limits is not configured',
      'pipeline.rcpt[0]: "greylist" is listed but defenses.greylist is not configured',
      'pipeline.content[0]: "authentication" is listed but defenses.authentication is not configured',
      'pipeline.content[1]: "spamd" is listed but defenses.spamd is not configured',
    ]);
  });

  test("a check listed under the wrong stage, or an unknown stage, is named", () => {
    expect(problemsOf({ defenses: { greylist: {} }, pipeline: { connect: ["greylist"], data: [] } })).toEqual([
      "pipeline.data: unknown key; known keys here: connect, mail, rcpt, content",
      'pipeline.connect[0]: expected one of blocklist, connection_rate, dnsbl, found string "greylist"',
    ]);
  });
});

describe("dns section", () => {
  test("servers default to the nameservers of the resolv.conf text given", () => {
    const c = parse({}, { cwd: "/etc/mailraven", resolvConf: "# generated\nsearch example.org\nnameserver 192.0.2.53\n; nameserver 192.0.2.99\nnameserver 2001:db8::53\n" });
    expect(c.dns).toEqual({
      servers: [
        { host: "192.0.2.53", port: 53 },
        { host: "2001:db8::53", port: 53 },
      ],
      timeoutMs: 2000,
      attempts: 2,
    });
  });

  test("an empty resolv.conf falls back to 127.0.0.1:53", () => {
    expect(parse({}, { cwd: "/etc/mailraven", resolvConf: "" }).dns.servers).toEqual([{ host: "127.0.0.1", port: 53 }]);
  });

  test("explicit servers with and without ports replace resolv.conf", () => {
    const c = parse({ dns: { servers: ["127.0.0.1:5353", "[::1]:53", "[2001:db8::1]", "192.0.2.1"], timeout: "300ms", attempts: 1 } });
    expect(c.dns).toEqual({
      servers: [
        { host: "127.0.0.1", port: 5353 },
        { host: "::1", port: 53 },
        { host: "2001:db8::1", port: 53 },
        { host: "192.0.2.1", port: 53 },
      ],
      timeoutMs: 300,
      attempts: 1,
    });
  });

  test("bad servers, timeouts and attempts are named", () => {
    const expected = 'an IP address with an optional port, such as "127.0.0.1:53" or "[::1]:5353"';
    expect(problemsOf({ dns: { servers: ["localhost:53", "127.0.0.1:0", "127.0.0.1:65536", "::1"], timeout: "10ms", attempts: 6 } })).toEqual([
      `dns.servers[0]: expected ${expected}, found string "localhost:53"`,
      `dns.servers[1]: expected ${expected}, found string "127.0.0.1:0"`,
      `dns.servers[2]: expected ${expected}, found string "127.0.0.1:65536"`,
      `dns.servers[3]: expected ${expected}, found string "::1"`,
      'dns.timeout: expected a duration such as "30s", "5m" or "1h" of at least 50 ms, found string "10ms"',
      "dns.attempts: expected an integer from 1 to 5, found number 6",
    ]);
  });
});

describe("per-domain authentication policy (mapping form of relay.domains)", () => {
  const c = parse({
    relay: {
      domains: {
        "plain.example": "smtp://10.0.0.5",
        "Strict.Example": { route: "smtp://10.0.0.6:2525", spf_fail: "reject" },
        "lax.example": { route: "lmtp://10.0.0.7", dmarc_reject: false, temp_error: "accept" },
        "routeonly.example": { route: "smtp://10.0.0.8" },
      },
    },
  });

  test("the mapping form still gives the route", () => {
    expect(c.relay.domains.get("strict.example")).toEqual({ protocol: "smtp", host: "10.0.0.6", port: 2525, uri: "smtp://10.0.0.6:2525" });
    expect(c.relay.domains.get("lax.example")?.uri).toBe("lmtp://10.0.0.7");
    expect(c.relay.domains.get("plain.example")?.uri).toBe("smtp://10.0.0.5");
  });

  test("only the keys given are set, so the rest comes from defenses.authentication", () => {
    expect(c.domainPolicy.get("strict.example")).toStrictEqual({ spfFail: "reject" });
    expect(c.domainPolicy.get("lax.example")).toStrictEqual({ dmarcReject: false, tempError: "accept" });
    expect(c.domainPolicy.get("routeonly.example")).toStrictEqual({});
    expect(c.domainPolicy.has("plain.example")).toBe(false);
  });

  test("bad policy values and a missing route are named", () => {
    expect(
      problemsOf({ relay: { domains: { "a.example": { route: "smtp://10.0.0.5", spf_fail: "drop", dmarc_reject: "yes" }, "b.example": { spf_fail: "tag" } } } }),
    ).toEqual([
      'relay.domains.a.example.dmarc_reject: expected true or false, found string "yes"',
      'relay.domains.a.example.spf_fail: expected one of reject, tag, found string "drop"',
      'relay.domains.b.example.route: expected a route such as "smtp://10.0.0.5:25" or "lmtp://[2001:db8::5]:24", found nothing',
    ]);
  });
});
