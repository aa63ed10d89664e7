// The outbound section's MX delivery keys (src/config/outbound.ts): defaults and errors.

import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/parse.ts";
import { configProblems } from "../helpers/config-problems.ts";

const parse = (outbound: unknown) => parseConfig({ hostname: "mx.example.org", outbound }, { cwd: "/etc/mailraven" }).outbound;

const problemsOf = (outbound: unknown): readonly string[] => configProblems(parse, outbound);

describe("outbound", () => {
  test("defaults: no MX delivery, opportunistic TLS, MTA-STS on, every internal MX address range ignored", () => {
    const o = parse(undefined);
    expect(o.mxDelivery).toBe(false);
    expect(o.tlsPolicy.default).toBe("opportunistic");
    expect(o.mtaSts).toBe(true);
    expect(o.ignoreMxAddresses.map((c) => c.text)).toEqual([
      "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
      "::/128", "::1/128", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8",
    ]);
  });

  test("ignore_mx_addresses: an empty list ignores nothing; single addresses and networks", () => {
    expect(parse({ ignore_mx_addresses: [] }).ignoreMxAddresses).toEqual([]);
    expect(parse({ ignore_mx_addresses: ["10.0.0.0/8", "fd00::1"] }).ignoreMxAddresses.map((c) => [c.text, c.bits])).toEqual([
      ["10.0.0.0/8", 8],
      ["fd00::1", 128],
    ]);
  });

  test("ignore_mx_addresses: each bad entry is named", () => {
    expect(problemsOf({ ignore_mx_addresses: ["10.0.0.0/33", 7] })).toEqual([
      'outbound.ignore_mx_addresses[0]: expected an address or network such as "127.0.0.0/8" or "::1", found string "10.0.0.0/33"',
      'outbound.ignore_mx_addresses[1]: expected an address or network such as "127.0.0.0/8" or "::1", found number 7',
    ]);
    expect(problemsOf({ ignore_mx_addresses: "127.0.0.0/8" })).toEqual(["outbound.ignore_mx_addresses: expected a list, found string \"127.0.0.0/8\""]);
  });

  test("tls_policy per domain", () => {
    const o = parse({ tls_policy: { default: "none", domains: { "Bank.Example": "verify" } } });
    expect(o.tlsPolicy.default).toBe("none");
    expect(o.tlsPolicy.byDomain.get("bank.example")).toBe("verify");
    expect(problemsOf({ tls_policy: { domains: { "bank.example": "strict" } } })[0]).toContain("one of none, opportunistic, required, verify");
  });
});
