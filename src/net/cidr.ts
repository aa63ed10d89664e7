// IPv4/IPv6 addresses and CIDR ranges as bigints, so one matcher serves both families.
// IPv4-mapped IPv6 clients (::ffff:192.0.2.1) match IPv4 ranges, as a dual-stack listener reports them.

export interface Cidr {
  readonly text: string;
  readonly v6: boolean;
  readonly base: bigint;
  readonly bits: number;
}

export function parseIp(text: string): { v6: boolean; value: bigint } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  if (mapped) return parseIp(mapped[1]!);
  if (!text.includes(":")) {
    const parts = text.split(".");
    if (parts.length !== 4) return undefined;
    let value = 0n;
    for (const p of parts) {
      if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
      value = (value << 8n) | BigInt(p);
    }
    return { v6: false, value };
  }
  return parseIpv6(text);
}

function parseIpv6(text: string): { v6: boolean; value: bigint } | undefined {
  const zoneless = text.replace(/%.*$/, "");
  // An embedded dotted quad in the last 32 bits (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) as two groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(zoneless);
  if (dotted) {
    const v4 = parseIp(dotted[2]!);
    if (!v4 || v4.v6) return undefined;
    return parseIpv6(`${dotted[1]}${(v4.value >> 16n).toString(16)}:${(v4.value & 0xffffn).toString(16)}`);
  }
  const halves = zoneless.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  let value = 0n;
  for (const g of all) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  // ::ffff:7f00:1 is the same address as ::ffff:127.0.0.1: the IPv4 client of a dual-stack socket.
  if (value >> 32n === 0xffffn) return { v6: false, value: value & 0xffffffffn };
  return { v6: true, value };
}

export function parseCidr(text: string): Cidr | undefined {
  const [addr, len, extra] = text.split("/");
  if (extra !== undefined || addr === undefined) return undefined;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const max = ip.v6 ? 128 : 32;
  const bits = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(bits >= 0 && bits <= max)) return undefined;
  const shift = BigInt(max - bits);
  return { text, v6: ip.v6, base: (ip.value >> shift) << shift, bits };
}

export function cidrContains(cidr: Cidr, ip: string): boolean {
  const parsed = parseIp(ip);
  return parsed !== undefined && holds(cidr, parsed);
}

function holds(cidr: Cidr, ip: { v6: boolean; value: bigint }): boolean {
  if (ip.v6 !== cidr.v6) return false;
  const shift = BigInt((cidr.v6 ? 128 : 32) - cidr.bits);
  return ip.value >> shift === cidr.base >> shift;
}

/** The address is parsed once, not once per range (this runs for every command of a session). */
export function anyContains(cidrs: readonly Cidr[], ip: string): boolean {
  if (cidrs.length === 0) return false;
  const parsed = parseIp(ip);
  return parsed !== undefined && cidrs.some((c) => holds(c, parsed));
}

/** The first of `ranges` whose network holds `ip` and that `keep` accepts; the address is parsed once. */
export function firstContaining<T extends { readonly cidr: Cidr }>(ranges: readonly T[], ip: string, keep: (range: T) => boolean): T | undefined {
  if (ranges.length === 0) return undefined;
  const parsed = parseIp(ip);
  return parsed === undefined ? undefined : ranges.find((r) => keep(r) && holds(r.cidr, parsed));
}

/**
 * The IPv4 address an IPv6 address carries, for checks that must not be bypassed by writing
 * an IPv4 destination in IPv6 form: IPv4-compatible ::a.b.c.d (RFC 4291 2.5.5.1, deprecated;
 * not :: and ::1), NAT64's well-known prefix 64:ff9b::/96 (RFC 6052 2.1) and 6to4's
 * 2002:aabb:ccdd::/48 (RFC 3056 2). (IPv4-mapped addresses are IPv4 already, see parseIp.)
 * Only for refusing destinations: a client's address is never trusted for what it embeds.
 */
export function embeddedIpv4(ip: string): string | null {
  const p = parseIp(ip);
  if (!p?.v6) return null;
  const v = p.value;
  let v4: bigint | null = null;
  if (v >> 32n === 0n && v > 0xffffn) v4 = v;
  else if (v >> 32n === 0x64ff9bn << 64n) v4 = v & 0xffffffffn;
  else if (v >> 112n === 0x2002n) v4 = (v >> 80n) & 0xffffffffn;
  return v4 === null ? null : formatIp({ v6: false, value: v4 });
}

/** True when `ip`, or the IPv4 address it embeds, is in one of the networks. */
export function anyContainsEmbedded(cidrs: readonly Cidr[], ip: string): boolean {
  if (anyContains(cidrs, ip)) return true;
  const v4 = embeddedIpv4(ip);
  return v4 !== null && anyContains(cidrs, v4);
}

/** An address as text: dotted IPv4, or IPv6 with the longest run of zero groups compressed (RFC 5952). */
export function formatIp(ip: { v6: boolean; value: bigint }): string {
  if (!ip.v6) return [24n, 16n, 8n, 0n].map((s) => String((ip.value >> s) & 255n)).join(".");
  const groups = Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt((7 - i) * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

/**
 * The key per-client limits, caches and blocks count under: the address itself for IPv4, and
 * its network of `ipv6PrefixLength` bits for IPv6 ("2001:db8:1:2::/64"), since one subscriber
 * gets a whole /64 and could otherwise take a fresh address for every attempt (Postfix 3.8's
 * smtpd_client_ipv6_prefix_length). Text that is no address is its own key.
 */
export function clientKey(ip: string, ipv6PrefixLength: number): string {
  const p = parseIp(ip);
  if (!p) return ip;
  if (!p.v6) return formatIp(p);
  const shift = BigInt(128 - ipv6PrefixLength);
  return `${formatIp({ v6: true, value: (p.value >> shift) << shift })}/${ipv6PrefixLength}`;
}
