// The PROXY protocol header (src/smtp/proxy-header.ts), versions 1 and 2, byte by byte as
// HAProxy's proxy-protocol.txt defines them; HAProxy itself sends them in proxy-protocol.test.ts.

import { describe, expect, test } from "bun:test";
import { parseProxyHeader, ProxyHeaderError } from "../../src/smtp/proxy-header.ts";

const SIG = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

function v2(verCmd: number, fam: number, body: number[]): Buffer {
  return Buffer.from([...SIG, verCmd, fam, body.length >> 8, body.length & 255, ...body]);
}

const ipv4Body = [192, 0, 2, 7, 10, 0, 0, 5, 0xc3, 0x50, 0x00, 0x19]; // 192.0.2.7:50000 -> 10.0.0.5:25
const ipv6Body = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, ...Array(15).fill(0), 1, 0x04, 0xd2, 0x00, 0x19];

describe("version 1", () => {
  test("TCP4 and TCP6: the source address and port; the length covers the CRLF", () => {
    const line = "PROXY TCP4 192.0.2.7 10.0.0.5 50000 25\r\n";
    expect(parseProxyHeader(Buffer.from(`${line}EHLO x\r\n`))).toEqual({ done: true, source: { address: "192.0.2.7", port: 50000 }, length: line.length });
    expect(parseProxyHeader(Buffer.from("PROXY TCP6 2001:DB8::7 2001:db8::1 1234 25\r\n"))).toMatchObject({ source: { address: "2001:db8::7", port: 1234 } });
    expect(parseProxyHeader(Buffer.from("PROXY TCP6 ::ffff:192.0.2.9 ::1 1234 25\r\n"))).toMatchObject({ source: { address: "192.0.2.9" } });
  });

  test("UNKNOWN: the connection's own address is used", () => {
    expect(parseProxyHeader(Buffer.from("PROXY UNKNOWN\r\n"))).toEqual({ done: true, source: null, length: 15 });
  });

  test("more bytes are needed until the CRLF", () => {
    for (const part of ["P", "PROXY", "PROXY TCP4 192.0.2.7 10.0.0.5 50000"]) expect(parseProxyHeader(Buffer.from(part))).toEqual({ done: false });
  });

  test("malformed lines, wrong families, bad ports and over-long lines are refused", () => {
    for (const bad of [
      "PROXY TCP4 192.0.2.7 10.0.0.5 50000\r\n",
      "PROXY TCP4 2001:db8::7 10.0.0.5 50000 25\r\n",
      "PROXY TCP6 192.0.2.7 2001:db8::1 50000 25\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.5 65536 25\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.5 050 25\r\n",
      "PROXY TCP4 mx.example 10.0.0.5 1 25\r\n",
      "PROXY UDP4 192.0.2.7 10.0.0.5 1 25\r\n",
      `PROXY TCP4 ${"1".repeat(110)}`,
    ]) {
      expect(() => parseProxyHeader(Buffer.from(bad))).toThrow(ProxyHeaderError);
    }
  });
});

describe("version 2", () => {
  test("PROXY over TCP/IPv4 and TCP/IPv6; TLVs after the addresses are skipped", () => {
    expect(parseProxyHeader(Buffer.concat([v2(0x21, 0x11, ipv4Body), Buffer.from("EHLO")]))).toEqual({ done: true, source: { address: "192.0.2.7", port: 50000 }, length: 28 });
    expect(parseProxyHeader(v2(0x21, 0x21, ipv6Body))).toEqual({ done: true, source: { address: "2001:db8::7", port: 1234 }, length: 52 });
    const tlv = [0x05, 0x00, 0x03, 0x61, 0x62, 0x63]; // PP2_TYPE_UNIQUE_ID "abc"
    expect(parseProxyHeader(v2(0x21, 0x11, [...ipv4Body, ...tlv]))).toMatchObject({ source: { address: "192.0.2.7" }, length: 34 });
  });

  test("LOCAL (a health check) and UNSPEC: the connection's own address", () => {
    expect(parseProxyHeader(v2(0x20, 0x00, []))).toEqual({ done: true, source: null, length: 16 });
    expect(parseProxyHeader(v2(0x21, 0x00, []))).toEqual({ done: true, source: null, length: 16 });
  });

  test("more bytes are needed within the signature, the fixed part and the addresses", () => {
    const whole = v2(0x21, 0x11, ipv4Body);
    for (const n of [1, 11, 12, 15, 16, 27]) expect(parseProxyHeader(whole.subarray(0, n))).toEqual({ done: false });
  });

  test("an unknown version or command, UDP, unix sockets, short addresses and huge lengths are refused", () => {
    for (const bad of [v2(0x11, 0x11, ipv4Body), v2(0x22, 0x11, ipv4Body), v2(0x21, 0x12, ipv4Body), v2(0x21, 0x31, Array(216).fill(0)), v2(0x21, 0x11, ipv4Body.slice(0, 8)), v2(0x21, 0x21, ipv4Body)]) {
      expect(() => parseProxyHeader(bad)).toThrow(ProxyHeaderError);
    }
    const huge = Buffer.from([...SIG, 0x21, 0x11, 0xff, 0xff]);
    expect(() => parseProxyHeader(huge)).toThrow("too long");
  });
});

test("anything else is not a PROXY header", () => {
  for (const other of ["EHLO client.example\r\n", "\r\nEHLO x\r\n", "GET / HTTP/1.1\r\n", "PROXI TCP4"]) expect(() => parseProxyHeader(Buffer.from(other))).toThrow(ProxyHeaderError);
});
