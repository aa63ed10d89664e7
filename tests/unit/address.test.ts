import { describe, expect, test } from "bun:test";
import { hasRoutingSyntax, parseMailbox } from "../../src/smtp/address.ts";

describe("parseMailbox", () => {
  test("splits local part and domain", () => {
    expect(parseMailbox("alice@example.org")).toEqual({ address: "alice@example.org", localPart: "alice", domain: "example.org", isLiteral: false });
  });

  test("the domain is lower-cased, the local part and address are kept as given", () => {
    expect(parseMailbox("Alice.Smith@EXAMPLE.Org")).toEqual({
      address: "Alice.Smith@EXAMPLE.Org",
      localPart: "Alice.Smith",
      domain: "example.org",
      isLiteral: false,
    });
  });

  test("a trailing dot on the domain is dropped", () => {
    expect(parseMailbox("bob@example.org.")?.domain).toBe("example.org");
    expect(parseMailbox("bob@Example.ORG.")?.domain).toBe("example.org");
  });

  test("an IDN domain is converted to its ASCII (punycode) form", () => {
    expect(parseMailbox("kunde@Bücher.example")?.domain).toBe("xn--bcher-kva.example");
    expect(parseMailbox("user@münchen.example.")?.domain).toBe("xn--mnchen-3ya.example");
    // Already ASCII-encoded input is the same key.
    expect(parseMailbox("user@XN--BCHER-KVA.example")?.domain).toBe("xn--bcher-kva.example");
  });

  test("address literals are flagged and not treated as domain names", () => {
    expect(parseMailbox("postmaster@[192.0.2.1]")).toEqual({ address: "postmaster@[192.0.2.1]", localPart: "postmaster", domain: "[192.0.2.1]", isLiteral: true });
    expect(parseMailbox("postmaster@[IPv6:2001:DB8::1]")).toMatchObject({ domain: "[ipv6:2001:db8::1]", isLiteral: true });
  });

  test("the last @ separates the domain (quoted local parts may contain @)", () => {
    expect(parseMailbox('"a@b"@example.org')).toMatchObject({ localPart: '"a@b"', domain: "example.org" });
  });

  test.each(["", "alice", "@example.org", "alice@", "@"])("%p is not a mailbox", (address) => {
    expect(parseMailbox(address)).toBeUndefined();
  });
});

describe("hasRoutingSyntax", () => {
  test.each(["user%evil.example", "user!host", "host!user", "%", '"user@evil.example"', "a@b"])("%p carries routing syntax", (local) => {
    expect(hasRoutingSyntax(local)).toBe(true);
  });

  test.each(["user", "first.last", "user+tag", "o'brien", "user-name_1", '"quoted string"'])("%p does not", (local) => {
    expect(hasRoutingSyntax(local)).toBe(false);
  });
});
