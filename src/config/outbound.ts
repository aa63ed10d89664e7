// The outbound section: MX delivery, TLS policy per destination, MTA-STS, DKIM signing.

import { resolve } from "node:path";
import { domainToASCII } from "node:url";
import { join, Reader } from "./reader.ts";
import type { OutboundConfig, TlsPolicy } from "./types.ts";

const POLICIES = ["none", "opportunistic", "required", "verify"] as const;

export function parseOutbound(r: Reader, value: unknown, stateDir: string, cwd: string): OutboundConfig {
  const path = "outbound";
  const o = r.section(value, path, ["mx_delivery", "tls_policy", "mta_sts", "dkim_dir", "dkim_sign"]);
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
    dkimDir: resolve(cwd, r.string(o, "dkim_dir", path, resolve(stateDir, "dkim"))),
    dkimSign: bool("dkim_sign", true),
  };
}
