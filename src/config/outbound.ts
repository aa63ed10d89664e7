// The outbound section: MX delivery, TLS policy per destination, MTA-STS, DKIM signing.

import { resolve } from "node:path";
import { domainToASCII } from "node:url";
import { parseCidr, type Cidr } from "../net/cidr.ts";
import { join, Reader } from "./reader.ts";
import type { OutboundConfig, TlsPolicy } from "./types.ts";

export const TLS_POLICIES = ["none", "opportunistic", "required", "verify"] as const;
const POLICIES = TLS_POLICIES;
/**
 * Like Exim's ignore_target_hosts: an MX host here is a mistake or a trick (or us, or the
 * cloud's metadata service at 169.254.169.254), never a peer on the internet. Unspecified,
 * loopback, RFC 1918 private, CGNAT (RFC 6598), link-local, reserved and multicast IPv4; the
 * same for IPv6 with ULA (RFC 4193) and NAT64 local-use (RFC 8215). IPv4 written in IPv6
 * forms is checked as the IPv4 address it embeds (net/cidr.ts).
 */
export const IGNORED_MX_ADDRESSES = [
  "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
  "::/128", "::1/128", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8",
];

export function parseOutbound(r: Reader, value: unknown, stateDir: string, cwd: string): OutboundConfig {
  const path = "outbound";
  const o = r.section(value, path, ["mx_delivery", "tls_policy", "mta_sts", "ignore_mx_addresses", "dkim_dir", "dkim_sign"]);
  const bool = (key: string, fallback: boolean) => {
    const v = o[key] ?? fallback;
    if (typeof v !== "boolean") return r.fail(join(path, key), "true or false", v) ?? fallback;
    return v;
  };
  const tp = r.section(o.tls_policy, join(path, "tls_policy"), ["default", "domains"]);
  const byDomain = new Map<string, TlsPolicy>();
  const domains = tp.domains;
  if (domains !== undefined && domains !== null) {
    if (typeof domains !== "object" || Array.isArray(domains)) r.fail(join(path, "tls_policy.domains"), "a mapping of domain to none, opportunistic, required or verify", domains);
    else
      for (const [name, policy] of Object.entries(domains)) {
        const ascii = domainToASCII(name.toLowerCase());
        const p = join(join(path, "tls_policy.domains"), name);
        if (!ascii) r.problems.push(`${p}: "${name}" is not a valid domain name`);
        else if (typeof policy !== "string" || !(POLICIES as readonly string[]).includes(policy)) r.fail(p, `one of ${POLICIES.join(", ")}`, policy);
        else byDomain.set(ascii, policy as TlsPolicy);
      }
  }
  return {
    mxDelivery: bool("mx_delivery", false),
    tlsPolicy: { default: r.oneOf(tp, "default", join(path, "tls_policy"), POLICIES, "opportunistic"), byDomain },
    mtaSts: bool("mta_sts", true),
    ignoreMxAddresses: cidrList(r, o, "ignore_mx_addresses", path, IGNORED_MX_ADDRESSES),
    dkimDir: resolve(cwd, r.string(o, "dkim_dir", path, resolve(stateDir, "dkim"))),
    dkimSign: bool("dkim_sign", true),
  };
}

function cidrList(r: Reader, obj: Record<string, unknown>, key: string, path: string, fallback: readonly string[]): Cidr[] {
  const list = r.list(obj, key, path) ?? fallback;
  const out: Cidr[] = [];
  list.forEach((item, i) => {
    const c = typeof item === "string" ? parseCidr(item.trim()) : undefined;
    if (c) out.push(c);
    else r.fail(join(join(path, key), i), 'an address or network such as "127.0.0.0/8" or "::1"', item);
  });
  return out;
}
