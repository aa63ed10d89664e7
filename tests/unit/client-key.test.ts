// Addresses as limits and deny lists see them: IPv6 clients by prefix, IPv4 written in IPv6 forms.

import { describe, expect, test } from "bun:test";
import { anyContains, anyContainsEmbedded, clientKey, embeddedIpv4, formatIp, parseCidr, parseIp, type Cidr } from "../../src/net/cidr.ts";

const cidrs = (...texts: string[]): Cidr[] => texts.map((t) => parseCidr(t)!);

describe("clientKey", () => {
  test("IPv4 is keyed by the address, also when reported IPv4-mapped", () => {
    expect(clientKey("192.0.2.7", 64)).toBe("192.0.2.7");
    expect(clientKey("::ffff:192.0.2.7", 64)).toBe("192.0.2.7");
    expect(clientKey("::ffff:c000:207", 64)).toBe("192.0.2.7");
  });

  test("two addresses of one /64 share a key; the next /64 does not", () => {
    const a = clientKey("2001:db8:1:2::1", 64);
    expect(a).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8:1:2:ffff:ffff:ffff:ffff", 64)).toBe(a);
    expect(clientKey("2001:DB8:1:2:0:0:0:9", 64)).toBe(a);
    expect(clientKey("2001:db8:1:3::1", 64)).not.toBe(a);
  });

  test("the prefix length is a setting: /48 groups more, /128 is the address", () => {
    expect(clientKey("2001:db8:1:2::1", 48)).toBe("2001:db8:1::/48");
    expect(clientKey("2001:db8:1:ff::1", 48)).toBe("2001:db8:1::/48");
    expect(clientKey("2001:db8::5", 128)).toBe("2001:db8::5/128");
  });

  test("the key of an IPv6 client is a network the blocklist can hold", () => {
    const net = parseCidr(clientKey("fd00:1::2", 64))!;
    expect(net.bits).toBe(64);
    expect(anyContains([net], "fd00:1::1")).toBe(true);
    expect(anyContains([net], "fd00:1:0:1::1")).toBe(false);
  });
});

describe("IPv4 in IPv6 forms", () => {
  test("IPv4-mapped in hex is the IPv4 address (as the dotted form already was)", () => {
    expect(parseIp("::ffff:7f09:909")).toEqual(parseIp("127.9.9.9"));
    expect(parseIp("0:0:0:0:0:ffff:7f09:0909")).toEqual(parseIp("127.9.9.9"));
    expect(anyContains(cidrs("127.0.0.0/8"), "::ffff:7f09:909")).toBe(true);
  });

  test.each([
    ["::127.9.9.9", "127.9.9.9"], // IPv4-compatible, dotted
    ["::7f09:909", "127.9.9.9"], // IPv4-compatible, hex
    ["64:ff9b::a9fe:a9fe", "169.254.169.254"], // NAT64 well-known prefix
    ["64:ff9b::10.0.0.1", "10.0.0.1"],
    ["2002:7f00:1::", "127.0.0.1"], // 6to4
    ["2002:c0a8:101:5::1", "192.168.1.1"],
  ])("%s carries %s", (v6, v4) => {
    expect(embeddedIpv4(v6)).toBe(v4);
  });

  test.each(["::", "::1", "2001:db8::1", "fe80::1", "64:ff9c::1", "127.0.0.1"])("%s carries none", (ip) => {
    expect(embeddedIpv4(ip)).toBeNull();
  });

  test("a deny list matches the embedded address; a trust list never does", () => {
    const deny = cidrs("127.0.0.0/8", "169.254.0.0/16");
    expect(anyContainsEmbedded(deny, "64:ff9b::7f00:1")).toBe(true);
    expect(anyContainsEmbedded(deny, "2002:a9fe:a9fe::1")).toBe(true);
    expect(anyContainsEmbedded(deny, "2001:db8::1")).toBe(false);
    // relay_networks use anyContains: a 6to4 client is not 127.0.0.1.
    expect(anyContains(cidrs("127.0.0.0/8"), "2002:7f00:1::1")).toBe(false);
  });
});

describe("formatIp", () => {
  test.each([
    ["2001:db8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"], // the longest zero run is compressed
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["2001:db8:1:1:1:1:0:1", "2001:db8:1:1:1:1:0:1"], // a single zero group is not
    ["0:0:0:0:0:0:0:0", "::"],
    ["fe80:0:0:0:0:0:0:0", "fe80::"],
    ["1.2.3.4", "1.2.3.4"],
  ])("%s -> %s", (input, out) => {
    expect(formatIp(parseIp(input)!)).toBe(out);
  });
});
