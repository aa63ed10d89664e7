// The dns, defenses and pipeline sections: resolvers, the edge checks' settings, and which
// optional checks run at each stage in which order.

import { parseCidr, type Cidr } from "../net/cidr.ts";
import { parseRate } from "../units.ts";
import { join, Reader, type Obj } from "./reader.ts";
import type { AuthPolicy, DefensesConfig, DnsConfig, DnsblZone, PipelineConfig, RateLimit, ScannerTarget } from "./types.ts";

export function parseDns(r: Reader, value: unknown, systemServers: () => { host: string; port: number }[]): DnsConfig {
  const dns = r.section(value, "dns", ["servers", "timeout", "attempts"]);
  const list = r.list(dns, "servers", "dns");
  const servers = list
    ? list.flatMap((item, i) => {
        const m = typeof item === "string" ? /^(?:\[([0-9a-f:.]+)\]|(\d+\.\d+\.\d+\.\d+))(?::(\d{1,5}))?$/i.exec(item.trim()) : null;
        const port = m?.[3] === undefined ? 53 : Number(m[3]);
        if (!m || port < 1 || port > 65535) return r.fail(join("dns.servers", i), 'an IP address with an optional port, such as "127.0.0.1:53" or "[::1]:5353"', item) ?? [];
        return [{ host: (m[1] ?? m[2])!, port }];
      })
    : systemServers();
  return {
    servers,
    timeoutMs: r.duration(dns, "timeout", "dns", 2000, 50),
    attempts: r.int(dns, "attempts", "dns", 2, 1, 5),
  };
}

export function parseDefenses(r: Reader, value: unknown, hostname: string): DefensesConfig {
  const d = r.section(value, "defenses", ["allowlist", "blocklist", "connection_rate", "dnsbl", "greylist", "rate_limits", "authentication", "spamd", "clamd"]);
  const p = "defenses";
  return {
    allowlist: cidrList(r, d, "allowlist", p),
    blocklist: cidrList(r, d, "blocklist", p),
    connectionRate: r.int(d, "connection_rate", p, 30, 0, 1_000_000),
    dnsbl: present(d.dnsbl) ? dnsbl(r, d.dnsbl) : null,
    greylist: present(d.greylist) ? greylist(r, d.greylist) : null,
    rateLimits: rateLimits(r, d.rate_limits),
    authentication: present(d.authentication) ? authentication(r, d.authentication, hostname) : null,
    spamd: present(d.spamd) ? spamd(r, d.spamd) : null,
    clamd: present(d.clamd) ? scanner(r, r.section(d.clamd, "defenses.clamd", ["address", "timeout"]), "defenses.clamd", "/run/clamav/clamd.ctl") : null,
  };
}

/** A section written as `greylist: {}` or `greylist:` (null) is switched on with its defaults. */
const present = (v: unknown) => v !== undefined && v !== false;

function cidrList(r: Reader, obj: Obj, key: string, path: string): Cidr[] {
  return (r.list(obj, key, path) ?? []).flatMap((item, i) => {
    const c = typeof item === "string" ? parseCidr(item.trim()) : undefined;
    return c ? [c] : (r.fail(join(join(path, key), i), 'an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32"', item) ?? []);
  });
}

function dnsbl(r: Reader, value: unknown): NonNullable<DefensesConfig["dnsbl"]> {
  const path = "defenses.dnsbl";
  const o = r.section(value ?? {}, path, ["zones", "threshold", "negative_ttl"]);
  const zones = (r.list(o, "zones", path) ?? []).flatMap((item, i) => {
    const z = typeof item === "string" ? parseZone(item.trim()) : null;
    return z ? [z] : (r.fail(join(join(path, "zones"), i), 'a DNS list such as "zen.spamhaus.org=127.0.0.[2..11]*3" (zone, optional =answer filter, optional *weight)', item) ?? []);
  });
  if (zones.length === 0) r.fail(join(path, "zones"), "at least one DNS list", o.zones);
  return { zones, threshold: r.int(o, "threshold", path, 1, -1000, 1000), negativeTtlMs: r.duration(o, "negative_ttl", path, 300_000) };
}

/** "zone[=a.b.c.d][*weight]" where each octet of the filter is N or [min..max] (Postfix's syntax). */
export function parseZone(spec: string): DnsblZone | null {
  const m = /^([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?:=([0-9.[\]]+))?(?:\*(-?\d+))?$/i.exec(spec);
  if (!m) return null;
  let filter: [number, number][] | null = null;
  if (m[2]) {
    const octets = m[2].match(/\[\d+\.\.\d+\]|\d+/g) ?? [];
    if (octets.join(".") !== m[2] || octets.length !== 4) return null;
    filter = octets.map((o) => {
      const range = /^\[(\d+)\.\.(\d+)\]$/.exec(o);
      return range ? [Number(range[1]), Number(range[2])] : [Number(o), Number(o)];
    });
    if (filter.some(([a, b]) => a > b || b > 255)) return null;
  }
  return { spec, zone: m[1]!.toLowerCase(), filter, weight: m[3] === undefined ? 1 : Number(m[3]) };
}

function greylist(r: Reader, value: unknown): NonNullable<DefensesConfig["greylist"]> {
  const path = "defenses.greylist";
  const o = r.section(value ?? {}, path, ["delay", "retry_window", "pass_ttl", "auto_allowlist_after", "allow_clients", "allow_senders", "allow_recipients", "new_triplets_per_network", "max_database_size"]);
  // The check compares sender domains, and recipient addresses or domains: anything else would never match.
  const names = (key: string, what: string, pattern: RegExp) =>
    (r.list(o, key, path) ?? []).flatMap((item, i) =>
      typeof item === "string" && pattern.test(item) ? [item.toLowerCase()] : (r.fail(join(join(path, key), i), what, item) ?? []),
    );
  return {
    delayMs: r.duration(o, "delay", path, 300_000),
    retryWindowMs: r.duration(o, "retry_window", path, 4 * 3_600_000, 60_000),
    passTtlMs: r.duration(o, "pass_ttl", path, 36 * 86_400_000, 3_600_000),
    autoAllowlistAfter: r.int(o, "auto_allowlist_after", path, 5, 0, 1_000_000),
    allowClients: cidrList(r, o, "allow_clients", path),
    allowSenders: names("allow_senders", 'a sender domain such as "example.org"', /^[a-z0-9.-]+$/i),
    allowRecipients: names("allow_recipients", 'a recipient address or domain such as "postmaster@example.org" or "example.org"', /^(?:[^\s@]+@)?[a-z0-9.-]+$/i),
    newTripletsPerNetwork: optionalRate(r, o.new_triplets_per_network, join(path, "new_triplets_per_network"), { messages: 500, windowMs: 3_600_000 }),
    maxDatabaseSize: r.size(o, "max_database_size", path, 256 * 1024 * 1024, 16 * 1024),
  };
}

/** A rate such as "500/1h"; "off" (or 0) for none; `fallback` when not given. */
function optionalRate(r: Reader, v: unknown, path: string, fallback: RateLimit): RateLimit | null {
  if (v === undefined || v === null) return fallback;
  if (v === 0 || v === "off") return null;
  const limit = typeof v === "string" ? parseRate(v) : undefined;
  return limit ?? r.fail(path, 'a count per window such as "500/1h" (or "off")', v) ?? null;
}

function rateLimits(r: Reader, value: unknown): DefensesConfig["rateLimits"] {
  const path = "defenses.rate_limits";
  const o = r.section(value, path, ["per_ip", "per_sender_domain"]);
  const limit = (key: string): RateLimit | null => {
    const v = o[key];
    if (v === undefined || v === null || v === 0 || v === "off") return null;
    const limit = typeof v === "string" ? parseRate(v) : undefined;
    return limit ?? r.fail(join(path, key), 'messages per window such as "100/1h" (or "off")', v) ?? null;
  };
  return { perIp: limit("per_ip"), perSenderDomain: limit("per_sender_domain") };
}

export function authPolicy(r: Reader, o: Obj, path: string, defaults: AuthPolicy): AuthPolicy {
  const dmarc = o.dmarc_reject ?? defaults.dmarcReject;
  if (typeof dmarc !== "boolean") r.fail(join(path, "dmarc_reject"), "true or false", dmarc);
  return {
    spfFail: r.oneOf(o, "spf_fail", path, ["reject", "tag"] as const, defaults.spfFail),
    dmarcReject: dmarc === true,
    tempError: r.oneOf(o, "temp_error", path, ["defer", "accept"] as const, defaults.tempError),
  };
}

export const DEFAULT_AUTH_POLICY: AuthPolicy = { spfFail: "tag", dmarcReject: true, tempError: "defer" };

function authentication(r: Reader, value: unknown, hostname: string): NonNullable<DefensesConfig["authentication"]> {
  const path = "defenses.authentication";
  const o = r.section(value ?? {}, path, ["authserv_id", "spf_fail", "dmarc_reject", "temp_error", "max_dkim_signatures", "max_arc_sets", "timeout"]);
  const authservId = r.string(o, "authserv_id", path, hostname);
  if (!/^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$/i.test(authservId)) r.fail(join(path, "authserv_id"), "a host name such as mx.example.org", authservId);
  return {
    authservId,
    policy: authPolicy(r, o, path, DEFAULT_AUTH_POLICY),
    // OpenDKIM's MaximumSignaturesToVerify is 3; RFC 8617 allows 50 ARC sets, real chains have a few.
    maxDkimSignatures: r.int(o, "max_dkim_signatures", path, 5, 1, 50),
    maxArcSets: r.int(o, "max_arc_sets", path, 5, 1, 50),
    timeoutMs: r.duration(o, "timeout", path, 10_000, 1000),
  };
}

function spamd(r: Reader, value: unknown): NonNullable<DefensesConfig["spamd"]> {
  const path = "defenses.spamd";
  const o = r.section(value ?? {}, path, ["address", "timeout", "tag_score", "reject_score"]);
  const score = (key: string, fallback: number) => {
    const v = o[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) return r.fail(join(path, key), "a number such as 5 or 7.5", v) ?? fallback;
    return v;
  };
  return { ...scanner(r, o, path, "127.0.0.1:783"), tagScore: score("tag_score", 5), rejectScore: score("reject_score", 10) };
}

function scanner(r: Reader, o: Obj, path: string, fallback: string): ScannerTarget {
  const address = r.string(o, "address", path, fallback);
  let target: ScannerTarget["target"];
  const hp = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+)):(\d{1,5})$/i.exec(address);
  if (address.startsWith("/")) target = { path: address };
  else if (hp && Number(hp[3]) >= 1 && Number(hp[3]) <= 65535) target = { host: (hp[1] ?? hp[2])!, port: Number(hp[3]) };
  else {
    r.fail(join(path, "address"), 'a unix socket path such as "/run/clamav/clamd.ctl" or host:port such as "127.0.0.1:783"', address);
    target = { path: fallback };
  }
  return { target, timeoutMs: r.duration(o, "timeout", path, 30_000, 100) };
}

const STAGES = {
  connect: ["blocklist", "connection_rate", "dnsbl"],
  mail: ["rate_limit"],
  rcpt: ["greylist"],
  content: ["authentication", "clamd", "spamd"],
} as const;

export function parsePipeline(r: Reader, value: unknown, d: DefensesConfig): PipelineConfig {
  const o = r.section(value, "pipeline", Object.keys(STAGES));
  const configured: Record<string, boolean> = {
    blocklist: true,
    connection_rate: d.connectionRate > 0,
    dnsbl: d.dnsbl !== null,
    rate_limit: d.rateLimits.perIp !== null || d.rateLimits.perSenderDomain !== null,
    greylist: d.greylist !== null,
    authentication: d.authentication !== null,
    clamd: d.clamd !== null,
    spamd: d.spamd !== null,
  };
  const section: Record<string, string> = { connection_rate: "defenses.connection_rate", rate_limit: "defenses.rate_limits", dnsbl: "defenses.dnsbl" };
  const stage = <S extends keyof typeof STAGES>(name: S): (typeof STAGES)[S][number][] => {
    const known = STAGES[name] as readonly string[];
    const list = r.list(o, name, "pipeline");
    if (!list) return known.filter((c) => configured[c]) as (typeof STAGES)[S][number][];
    return list.flatMap((item, i) => {
      const path = join(join("pipeline", name), i);
      if (typeof item !== "string" || !known.includes(item)) return r.fail(path, `one of ${known.join(", ")}`, item) ?? [];
      if (!configured[item]) {
        r.problems.push(`${path}: "${item}" is listed but ${section[item] ?? `defenses.${item}`} is not configured`);
        return [];
      }
      return [item as (typeof STAGES)[S][number]];
    });
  };
  return { connect: stage("connect"), mail: stage("mail"), rcpt: stage("rcpt"), content: stage("content") };
}
