import { describe, expect, test } from "bun:test";
import { anyContains, cidrContains, parseCidr, parseIp, type Cidr } from "../../src/net/cidr.ts";

function cidr(text: string): Cidr {
  const c = parseCidr(text);
  if (!c) throw new Error(`test setup: ${text} did not parse`);
  return c;
}

describe("parseIp", () => {
  test("IPv4", () => {
    expect(parseIp("192.0.2.1")).toEqual({ v6: false, value: 0xc0000201n });
    expect(parseIp("0.0.0.0")).toEqual({ v6: false, value: 0n });
    expect(parseIp("255.255.255.255")).toEqual({ v6: false, value: 0xffffffffn });
  });

  test("IPv6 full and compressed forms give the same value", () => {
    const full = parseIp("2001:0db8:0000:0000:0000:0000:0000:0001");
    expect(full).toEqual({ v6: true, value: 0x20010db8000000000000000000000001n });
    expect(parseIp("2001:db8::1")).toEqual(full);
    expect(parseIp("2001:DB8::1")).toEqual(full);
    expect(parseIp("2001:db8:0:0:0:0:0:1")).toEqual(full);
  });

  test("::, ::1, leading and trailing compression", () => {
    expect(parseIp("::")).toEqual({ v6: true, value: 0n });
    expect(parseIp("::1")).toEqual({ v6: true, value: 1n });
    expect(parseIp("fe80::")).toEqual({ v6: true, value: 0xfe80n << 112n });
    expect(parseIp("1:2:3:4:5:6:7::")).toEqual({ v6: true, value: 0x0001000200030004000500060007_0000n });
    expect(parseIp("::2:3:4:5:6:7:8")).toEqual({ v6: true, value: 0x0000000200030004000500060007_0008n });
  });

  test("IPv4-mapped IPv6 is read as the IPv4 address", () => {
    expect(parseIp("::ffff:127.0.0.1")).toEqual({ v6: false, value: 0x7f000001n });
    expect(parseIp("::FFFF:192.0.2.1")).toEqual(parseIp("192.0.2.1"));
  });

  test("zone ids are ignored", () => {
    expect(parseIp("fe80::1%eth0")).toEqual(parseIp("fe80::1"));
  });

  test.each([
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.-4",
    "1.2.3.4 ",
    "1..3.4",
    "a.b.c.d",
    "::1::",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7::8",
    "12345::",
    "g::1",
    ":1:2:3:4:5:6:7",
    "1:::2",
    "",
    "localhost",
  ])("%p is not an address", (text) => {
    expect(parseIp(text)).toBeUndefined();
  });
});

describe("parseCidr", () => {
  test("IPv4 network with host bits cleared", () => {
    const c = cidr("192.0.2.77/24");
    expect(c.v6).toBe(false);
    expect(c.bits).toBe(24);
    expect(c.base).toBe(0xc0000200n);
    expect(c.text).toBe("192.0.2.77/24");
  });

  test("a bare address is a single host (/32, /128)", () => {
    expect(cidr("192.0.2.1").bits).toBe(32);
    expect(cidr("2001:db8::1").bits).toBe(128);
  });

  test("IPv6 network", () => {
    const c = cidr("2001:db8::/32");
    expect(c.v6).toBe(true);
    expect(c.bits).toBe(32);
    expect(c.base).toBe(0x20010db8n << 96n);
  });

  test.each([
    "256.1.1.1/8",
    "1.2.3/24",
    "1.2.3.4/33",
    "2001:db8::/129",
    "::1::/128",
    "10.0.0.0/",
    "10.0.0.0/-1",
    "10.0.0.0/8/8",
    "10.0.0.0/8a",
    "10.0.0.0/ 8",
    "/8",
    "",
  ])("%p is rejected", (text) => {
    expect(parseCidr(text)).toBeUndefined();
  });
});

describe("cidrContains", () => {
  test("IPv4 /8", () => {
    const lo = cidr("127.0.0.0/8");
    expect(cidrContains(lo, "127.0.0.1")).toBe(true);
    expect(cidrContains(lo, "127.255.255.255")).toBe(true);
    expect(cidrContains(lo, "128.0.0.1")).toBe(false);
    expect(cidrContains(lo, "126.255.255.255")).toBe(false);
  });

  test("IPv4 /24 boundaries", () => {
    const net = cidr("192.0.2.0/24");
    expect(cidrContains(net, "192.0.2.0")).toBe(true);
    expect(cidrContains(net, "192.0.2.255")).toBe(true);
    expect(cidrContains(net, "192.0.3.0")).toBe(false);
    expect(cidrContains(net, "192.0.1.255")).toBe(false);
  });

  test("IPv4-mapped IPv6 client matches an IPv4 range", () => {
    const lo = cidr("127.0.0.0/8");
    expect(cidrContains(lo, "::ffff:127.0.0.1")).toBe(true);
    expect(cidrContains(lo, "::ffff:10.0.0.1")).toBe(false);
    expect(cidrContains(cidr("10.1.2.3/32"), "::ffff:10.1.2.3")).toBe(true);
  });

  test("/0 matches every address of its family only", () => {
    const all4 = cidr("0.0.0.0/0");
    expect(cidrContains(all4, "0.0.0.0")).toBe(true);
    expect(cidrContains(all4, "255.255.255.255")).toBe(true);
    expect(cidrContains(all4, "::1")).toBe(false);
    const all6 = cidr("::/0");
    expect(cidrContains(all6, "::")).toBe(true);
    expect(cidrContains(all6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
    expect(cidrContains(all6, "10.0.0.1")).toBe(false);
  });

  test("/32 matches exactly one IPv4 address", () => {
    const one = cidr("192.0.2.1/32");
    expect(cidrContains(one, "192.0.2.1")).toBe(true);
    expect(cidrContains(one, "192.0.2.0")).toBe(false);
    expect(cidrContains(one, "192.0.2.2")).toBe(false);
  });

  test("/128 matches exactly one IPv6 address", () => {
    const one = cidr("::1/128");
    expect(cidrContains(one, "::1")).toBe(true);
    expect(cidrContains(one, "0:0:0:0:0:0:0:1")).toBe(true);
    expect(cidrContains(one, "::")).toBe(false);
    expect(cidrContains(one, "::2")).toBe(false);
  });

  test("IPv6 /32 boundaries and compressed client forms", () => {
    const doc = cidr("2001:db8::/32");
    expect(cidrContains(doc, "2001:db8::1")).toBe(true);
    expect(cidrContains(doc, "2001:0DB8:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
    expect(cidrContains(doc, "2001:db9::")).toBe(false);
    expect(cidrContains(doc, "2001:db7:ffff::")).toBe(false);
  });

  test("an IPv4 address never matches an IPv6 range with the same bits", () => {
    // ::c000:201 has the same 128-bit value as 192.0.2.1 has in 32 bits; families must not mix.
    expect(cidrContains(cidr("::/96"), "0.0.0.1")).toBe(false);
    expect(cidrContains(cidr("0.0.0.0/32"), "::")).toBe(false);
  });

  test("an unparsable client address matches nothing", () => {
    expect(cidrContains(cidr("0.0.0.0/0"), "not-an-ip")).toBe(false);
    expect(cidrContains(cidr("::/0"), "::1::")).toBe(false);
    expect(cidrContains(cidr("0.0.0.0/0"), "256.0.0.1")).toBe(false);
  });
});

describe("anyContains", () => {
  const nets = [cidr("127.0.0.0/8"), cidr("::1/128"), cidr("10.0.0.0/8")];
  test("matches if any range contains the address", () => {
    expect(anyContains(nets, "10.20.30.40")).toBe(true);
    expect(anyContains(nets, "::1")).toBe(true);
    expect(anyContains(nets, "::ffff:127.0.0.1")).toBe(true);
    expect(anyContains(nets, "192.0.2.1")).toBe(false);
    expect(anyContains(nets, "2001:db8::1")).toBe(false);
  });
  test("an empty list matches nothing", () => {
    expect(anyContains([], "127.0.0.1")).toBe(false);
  });
});
