import { describe, expect, test } from "bun:test";
import { domainToASCII } from "node:url";
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

  test("the domain is what domainToASCII makes of it, for every short name of letters, digits, 0x, dots and hyphens (the shortcut for plain names included)", () => {
    // WHATWG host parsing turns a numeric last label into an IPv4 address ("a.0x7f" is refused,
    // "1.2.3" becomes 1.2.0.3) and checks xn-- labels: the shortcut must never skip either.
    const alphabet = "ab0x9.-";
    const wrong: string[] = [];
    for (let len = 1; len <= 5; len++) {
      for (let i = 0; i < alphabet.length ** len; i++) {
        let name = "";
        for (let k = i, j = 0; j < len; j++, k = Math.floor(k / alphabet.length)) name += alphabet[k % alphabet.length];
        const expected = domainToASCII(name.replace(/\.$/, ""));
        const got = parseMailbox(`u@${name}`)?.domain;
        if (got !== (expected || undefined)) wrong.push(name);
      }
    }
    for (const name of ["xn--abc.example", "a.xn--p1ai", "example.123", "a.0x1f", "b\u00fccher.example", "under_score.example"]) {
      if (parseMailbox(`u@${name}`)?.domain !== (domainToASCII(name) || undefined)) wrong.push(name);
    }
    expect(wrong).toEqual([]);
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
