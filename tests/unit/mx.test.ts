// Which hosts mail for a domain goes to (src/deliver/mx.ts), against a real DNS server
// (dnsmasq on loopback): MX preference order, implicit MX, null MX, NXDOMAIN, DNS failures,
// ignored addresses, and never delivering to ourselves.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DnsError, Resolver, type Answer } from "../../src/dns/resolver.ts";
import { byPreference, mailHosts, selfMatcher, type MxResolver } from "../../src/deliver/mx.ts";
import { DeliveryFailure } from "../../src/deliver/result.ts";
import { parseCidr, type Cidr } from "../../src/net/cidr.ts";
import { BlackholeDns, DnsServer } from "../helpers/dns.ts";

let dns: DnsServer;
let resolver: Resolver;
const LOOPBACK: Cidr[] = ["127.0.0.0/8", "::1/128"].map((c) => parseCidr(c)!);
const none = { ignore: [] as Cidr[], isSelf: () => false };

beforeAll(async () => {
  dns = await DnsServer.start({
    hosts: {
      "a.pref.test": ["192.0.2.1"],
      "b.pref.test": ["192.0.2.2"],
      "c.pref.test": ["192.0.2.3", "2001:db8::3"],
      "implicit.test": ["192.0.2.10"],
      "local.loop.test": ["127.0.0.5"],
      "public.loop.test": ["192.0.2.20"],
      // IPv4 in IPv6 forms: mapped, compatible, NAT64, 6to4.
      "mx.embed.test": ["::ffff:127.9.9.9", "::127.9.9.9", "64:ff9b::a9fe:a9fe", "2002:c0a8:101::1"],
    },
    mx: {
      "pref.test": [
        { host: "c.pref.test", pref: 20 },
        { host: "a.pref.test", pref: 10 },
        { host: "b.pref.test", pref: 10 },
      ],
      "null.test": [{ host: ".", pref: 0 }],
      "embed.test": [{ host: "mx.embed.test", pref: 10 }],
      "noaddr.test": [{ host: "missing.noaddr.test", pref: 10 }],
      "loop.test": [
        { host: "local.loop.test", pref: 10 },
        { host: "public.loop.test", pref: 20 },
      ],
    },
    txt: { "empty.test": ["v=spf1 -all"] },
  });
  resolver = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 500, attempts: 1 });
});
afterAll(() => dns.stop());

async function failure(p: Promise<unknown>): Promise<DeliveryFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DeliveryFailure) return err;
    throw err;
  }
  throw new Error("expected a DeliveryFailure");
}

describe("MX records", () => {
  test("by preference; equal preferences in random order (RFC 5321 5.1); IPv6 addresses before IPv4", async () => {
    const first = await mailHosts("pref.test", resolver, { ...none, random: () => 0 });
    const second = await mailHosts("pref.test", resolver, { ...none, random: () => 0.99 });
    expect(first.map((h) => h.name).slice(0, 2).sort()).toEqual(["a.pref.test", "b.pref.test"]);
    expect(first.map((h) => h.name).slice(0, 2)).not.toEqual(second.map((h) => h.name).slice(0, 2));
    expect(first[2]).toEqual({ name: "c.pref.test", preference: 20, addresses: ["2001:db8::3", "192.0.2.3"] });
    expect(first.find((h) => h.name === "a.pref.test")).toEqual({ name: "a.pref.test", preference: 10, addresses: ["192.0.2.1"] });
  });

  test("byPreference keeps every record and sorts the groups", () => {
    const recs = [5, 1, 5, 3, 1].map((preference, i) => ({ preference, i }));
    const sorted = byPreference(recs, Math.random);
    expect(sorted.map((r) => r.preference)).toEqual([1, 1, 3, 5, 5]);
    expect(sorted.map((r) => r.i).sort()).toEqual([0, 1, 2, 3, 4]);
  });

  test("no MX: the domain itself is the mail host (implicit MX)", async () => {
    expect(await mailHosts("implicit.test", resolver, none)).toEqual([{ name: "implicit.test", preference: 0, addresses: ["192.0.2.10"] }]);
  });

  test("a null MX (RFC 7505): permanent 5.1.10", async () => {
    const f = await failure(mailHosts("null.test", resolver, none));
    expect(f.result).toEqual({ kind: "permanent", response: "5.1.10 Domain null.test does not accept mail (null MX)" });
  });

  test("NXDOMAIN: permanent 5.1.2", async () => {
    const f = await failure(mailHosts("nowhere.test", resolver, none));
    expect(f.result.kind).toBe("permanent");
    expect(f.result.response).toStartWith("5.1.2 Bad destination domain: nowhere.test does not exist");
  });

  test("a name with neither MX nor address records: permanent 5.1.2", async () => {
    const f = await failure(mailHosts("empty.test", resolver, none));
    expect(f.result).toEqual({ kind: "permanent", response: "5.1.2 Bad destination domain: empty.test has no MX and no address records" });
  });

  test("MX hosts without addresses: permanent 5.4.4", async () => {
    const f = await failure(mailHosts("noaddr.test", resolver, none));
    expect(f.result).toEqual({ kind: "permanent", response: "5.4.4 Unable to route: no MX host of noaddr.test has an address" });
  });

  test("a DNS server that does not answer: temporary 4.4.3", async () => {
    const hole = await BlackholeDns.start();
    try {
      const slow = new Resolver({ servers: [{ host: "127.0.0.1", port: hole.port }], timeoutMs: 100, attempts: 1 });
      const f = await failure(mailHosts("pref.test", slow, none));
      expect(f.result).toEqual({ kind: "temporary", response: "4.4.3 MX lookup of pref.test failed: ETIMEOUT" });
    } finally {
      await hole.stop();
    }
  });
});

describe("addresses we never connect to", () => {
  test("ignored addresses (outbound.ignore_mx_addresses) are skipped; only ignored ones left: permanent 5.4.4", async () => {
    expect((await mailHosts("loop.test", resolver, { ignore: LOOPBACK, isSelf: () => false })).map((h) => h.name)).toEqual(["public.loop.test"]);
    const onlyLocal = await failure(mailHosts("local.loop.test", resolver, { ignore: LOOPBACK, isSelf: () => false }));
    expect(onlyLocal.result.kind).toBe("permanent");
    expect(onlyLocal.result.response).toStartWith("5.4.4 Unable to route: the mail hosts of local.loop.test have only ignored addresses");
  });

  test("we are the best MX: permanent 5.4.6 (a loop)", async () => {
    const f = await failure(mailHosts("loop.test", resolver, { ignore: [], isSelf: (a) => a === "127.0.0.5" }));
    expect(f.result).toEqual({ kind: "permanent", response: "5.4.6 Mail for loop.test loops back to myself (MX preference 10)" });
  });

  test("we are a backup MX: only more preferred hosts are used (RFC 5321 5.1)", async () => {
    const hosts = await mailHosts("loop.test", resolver, { ignore: [], isSelf: (a) => a === "192.0.2.20" });
    expect(hosts.map((h) => h.name)).toEqual(["local.loop.test"]);
  });

  test("IPv4 written as IPv6 is checked as the IPv4 address: mapped, compatible, NAT64, 6to4", async () => {
    const ignore = ["127.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"].map((t) => parseCidr(t)!);
    expect((await resolver.aaaa("mx.embed.test")).records).toHaveLength(4);
    const f = await failure(mailHosts("embed.test", resolver, { ignore, isSelf: () => false }));
    expect(f.result.response).toStartWith("5.4.4 Unable to route: the mail hosts of embed.test have only ignored addresses");
    // Self-detection sees through the same forms: we are 192.0.2.7, the MX says ::ffff:c000:207.
    const self = selfMatcher([{ host: "192.0.2.7", port: 25 }], {});
    expect(self("::ffff:c000:207")).toBe(true);
    expect(self("64:ff9b::c000:207")).toBe(true);
  });

  test("selfMatcher: listen addresses, whatever the port; with a wildcard listener, every interface address", () => {
    const specific = selfMatcher([{ host: "192.0.2.7", port: 2525 }], {});
    expect(specific("192.0.2.7")).toBe(true);
    expect(specific("::ffff:192.0.2.7")).toBe(true);
    expect(specific("192.0.2.8")).toBe(false);
    const iface = (address: string) => ({ address, netmask: "", family: "IPv4" as const, mac: "", internal: false, cidr: null });
    const wildcard = selfMatcher([{ host: "0.0.0.0", port: 25 }], { eth0: [iface("198.51.100.4")], lo: [iface("127.0.0.1")] });
    expect(wildcard("198.51.100.4")).toBe(true);
    expect(wildcard("127.0.0.1")).toBe(true);
    expect(wildcard("198.51.100.5")).toBe(false);
  });
});

describe("DNS trouble for one host", () => {
  const answer = <T>(records: T[]): Answer<T> => ({ records, ttl: 60 });
  const stub = (failA: Record<string, DnsError>): MxResolver => ({
    mx: async () => answer([
      { exchange: "one.stub.test", priority: 10 },
      { exchange: "two.stub.test", priority: 20 },
    ]),
    a: async (name) => {
      if (failA[name]) throw failA[name];
      return answer(["192.0.2.50"]);
    },
    aaaa: async (name) => {
      throw new DnsError("ENODATA", name);
    },
  });

  test("the other hosts are still used", async () => {
    const hosts = await mailHosts("stub.test", stub({ "one.stub.test": new DnsError("ESERVFAIL", "one.stub.test") }), none);
    expect(hosts.map((h) => h.name)).toEqual(["two.stub.test"]);
  });

  test("no host left because of it: temporary 4.4.3", async () => {
    const f = await failure(mailHosts("stub.test", stub({ "one.stub.test": new DnsError("ETIMEOUT", "one.stub.test"), "two.stub.test": new DnsError("ENOTFOUND", "two.stub.test") }), none));
    expect(f.result).toEqual({ kind: "temporary", response: "4.4.3 Address lookup of one.stub.test failed: ETIMEOUT" });
  });
});
