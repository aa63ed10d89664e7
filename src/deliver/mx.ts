// Where mail for a domain goes (RFC 5321 5.1): its MX hosts by preference, equal preferences
// in random order, each with its addresses; the domain itself when it has no MX (the implicit
// MX); nowhere for a null MX (RFC 7505). Lookups go through our resolver (src/dns), never
// node:dns. Failures are typed: an answer that says "no" is permanent, DNS trouble temporary.

import { networkInterfaces } from "node:os";
import type { ListenAddress } from "../config/types.ts";
import { DnsError, type Answer } from "../dns/resolver.ts";
import { anyContainsEmbedded, embeddedIpv4, parseIp, type Cidr } from "../net/cidr.ts";
import { DeliveryFailure } from "./result.ts";

export interface MailHost {
  /** Lower case, no trailing dot: what certificates and MTA-STS patterns are checked against. */
  readonly name: string;
  readonly preference: number;
  /** IPv6 first, then IPv4 (RFC 6724's default order; an unreachable IPv6 fails fast). */
  readonly addresses: readonly string[];
}

/** The part of src/dns/resolver.ts used here (a stub in unit tests). */
export interface MxResolver {
  mx(name: string): Promise<Answer<{ exchange: string; priority: number }>>;
  a(name: string): Promise<Answer<string>>;
  aaaa(name: string): Promise<Answer<string>>;
}

export interface MailHostOptions {
  /** Addresses never connected to (outbound.ignore_mx_addresses). */
  readonly ignore: readonly Cidr[];
  /** True for an address this relay receives mail on (see selfMatcher). */
  readonly isSelf: (address: string) => boolean;
  readonly random?: () => number;
}

/** The hosts to try, best first; throws DeliveryFailure when there is none. */
export async function mailHosts(domain: string, resolver: MxResolver, opts: MailHostOptions): Promise<MailHost[]> {
  const mx = await mxRecords(domain, resolver, opts.random ?? Math.random);
  // RFC 5321 5.1: no MX records, the domain itself is the mail host ("implicit MX").
  const candidates = mx ?? [{ name: domain, preference: 0 }];
  const looked = await Promise.all(candidates.map((c) => addressesOf(c.name, resolver)));
  let hosts = candidates.map((c, i) => ({ ...c, ...looked[i]! }));

  // RFC 5321 5.1: when we are one of the hosts, only more preferred ones may be used
  // (we are a backup MX); when we are the best one, the mail would loop.
  const own = hosts.filter((h) => h.addresses.some(opts.isSelf)).map((h) => h.preference);
  if (own.length) {
    const cut = Math.min(...own);
    hosts = hosts.filter((h) => h.preference < cut);
    if (!hosts.length) throw DeliveryFailure.permanent(`5.4.6 Mail for ${domain} loops back to myself (MX preference ${cut})`);
  }

  // ::ffff:127.9.9.9, 64:ff9b::a9fe:a9fe or 2002:7f00:1:: reach what they embed: checked as such.
  const ignored = (a: string) => anyContainsEmbedded(opts.ignore, a);
  const usable = hosts.map((h) => ({ name: h.name, preference: h.preference, addresses: h.addresses.filter((a) => !ignored(a)) })).filter((h) => h.addresses.length);
  if (usable.length) return usable;

  const dnsTrouble = hosts.find((h) => h.dnsError);
  if (dnsTrouble) throw DeliveryFailure.temporary(`4.4.3 Address lookup of ${dnsTrouble.name} failed: ${dnsTrouble.dnsError}`);
  if (hosts.some((h) => h.addresses.length)) {
    throw DeliveryFailure.permanent(`5.4.4 Unable to route: the mail hosts of ${domain} have only ignored addresses (outbound.ignore_mx_addresses)`);
  }
  if (!mx) throw DeliveryFailure.permanent(`5.1.2 Bad destination domain: ${domain} has no MX and no address records`);
  throw DeliveryFailure.permanent(`5.4.4 Unable to route: no MX host of ${domain} has an address`);
}

/** Sorted MX records, or null when the domain has none (NODATA). */
async function mxRecords(domain: string, resolver: MxResolver, random: () => number): Promise<{ name: string; preference: number }[] | null> {
  let answer: Answer<{ exchange: string; priority: number }>;
  try {
    answer = await resolver.mx(domain);
  } catch (err) {
    const code = err instanceof DnsError ? err.code : "EBADRESP";
    if (code === "ENODATA") return null;
    if (code === "ENOTFOUND") throw DeliveryFailure.permanent(`5.1.2 Bad destination domain: ${domain} does not exist (NXDOMAIN)`);
    throw DeliveryFailure.temporary(`4.4.3 MX lookup of ${domain} failed: ${code}`);
  }
  const records = answer.records.map((r) => ({ name: hostName(r.exchange), preference: r.priority }));
  // RFC 7505 3: one MX whose exchange is the root: the domain accepts no mail at all.
  // Any preference is taken, like Postfix; next to real MX records a null MX is just skipped.
  const real = records.filter((r) => r.name !== "");
  if (!real.length) throw DeliveryFailure.permanent(`5.1.10 Domain ${domain} does not accept mail (null MX)`);
  return byPreference(real, random);
}

/** Ascending preference; within one preference a random order spreads the load (RFC 5321 5.1). */
export function byPreference<T extends { preference: number }>(records: readonly T[], random: () => number): T[] {
  const groups = Map.groupBy(records, (r) => r.preference);
  return [...groups.keys()].sort((a, b) => a - b).flatMap((p) => shuffle(groups.get(p)!, random));
}

function shuffle<T>(items: T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function addressesOf(name: string, resolver: MxResolver): Promise<{ addresses: string[]; dnsError: string | null }> {
  const [v6, v4] = await Promise.allSettled([resolver.aaaa(name), resolver.a(name)]);
  const addresses: string[] = [];
  let dnsError: string | null = null;
  for (const r of [v6, v4]) {
    if (r.status === "fulfilled") addresses.push(...r.value.records);
    // NXDOMAIN and NODATA for one family are answers; anything else may change on retry.
    else if (!(r.reason instanceof DnsError && r.reason.isNegative)) dnsError = r.reason instanceof DnsError ? r.reason.code : String(r.reason);
  }
  return { addresses, dnsError: addresses.length ? null : dnsError };
}

const hostName = (exchange: string) => exchange.toLowerCase().replace(/\.$/, "");

/**
 * Whether an address is one we receive mail on: a listen address, or with a wildcard listener
 * any address of this machine. The port is not compared: behind a port forward, 25 may be us.
 */
export function selfMatcher(listen: readonly ListenAddress[], interfaces = networkInterfaces()): (address: string) => boolean {
  const key = (a: string) => {
    const ip = parseIp(embeddedIpv4(a) ?? a);
    return ip ? `${ip.v6 ? 6 : 4}/${ip.value}` : null;
  };
  const wildcard = listen.some((l) => key(l.host) === key("0.0.0.0") || key(l.host) === key("::"));
  const own = wildcard ? Object.values(interfaces).flatMap((list) => (list ?? []).map((i) => i.address)) : listen.map((l) => l.host);
  const keys = new Set(own.map(key).filter((k) => k !== null));
  return (address) => keys.has(key(address) ?? "");
}
