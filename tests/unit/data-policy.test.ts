import { describe, expect, test } from "bun:test";
import { bareNewline, headerSize, hopCount, messageSize, nulOctets } from "../../src/checks/data-policy.ts";
import type { DataContext } from "../../src/checks/types.ts";

function ctx(over: Partial<DataContext>): DataContext {
  return {
    client: { ip: "192.0.2.1", port: 40000, hostname: "[192.0.2.1]", helo: "client.example", secure: false, trusted: false, user: null },
    sender: "a@example.org",
    recipients: [],
    size: 100,
    sizeExceeded: false,
    bareNewline: false,
    hops: 0,
    nulOctets: false,
    headerTooLarge: false,
    ...over,
  };
}

describe("hopCount", () => {
  const check = hopCount(50);
  test("up to the limit is accepted", () => {
    expect(check(ctx({ hops: 50 }))).toEqual({ kind: "accept" });
  });
  test("over the limit is a loop: 554 5.4.6", () => {
    expect(check(ctx({ hops: 51 }))).toMatchObject({ kind: "reject", code: 554, status: "5.4.6", reason: "mail loop" });
  });
});

describe("messageSize", () => {
  const check = messageSize(1_048_576);

  test("within the limit is accepted", () => {
    expect(check(ctx({ size: 1_048_576 }))).toEqual({ kind: "accept" });
  });

  test("over the limit is 552 5.3.4 naming the limit", () => {
    expect(check(ctx({ size: 2_000_000, sizeExceeded: true }))).toEqual({
      kind: "reject",
      code: 552,
      status: "5.3.4",
      text: "Message size exceeds fixed limit of 1048576 bytes",
      reason: "message too large",
    });
  });
});

describe("bareNewline", () => {
  test("CRLF-only content is accepted", () => {
    expect(bareNewline(ctx({ bareNewline: false }))).toEqual({ kind: "accept" });
  });

  test("a bare LF or CR is 550 5.5.2", () => {
    const v = bareNewline(ctx({ bareNewline: true }));
    expect(v).toMatchObject({ kind: "reject", code: 550, status: "5.5.2", reason: "bare newline" });
    expect(v.kind === "reject" && v.text).toContain("bare LF or CR");
  });
});

describe("headerSize", () => {
  const check = headerSize(102_400, 1_048_576);
  test("within the limits is accepted", () => {
    expect(check(ctx({}))).toEqual({ kind: "accept" });
  });
  test("over them is 552 5.3.4 naming both limits", () => {
    const v = check(ctx({ headerTooLarge: true }));
    expect(v).toMatchObject({ kind: "reject", code: 552, status: "5.3.4", reason: "header too large" });
    expect(v.kind === "reject" && v.text).toContain("102400 bytes per field, 1048576 bytes in all");
  });
});

describe("nulOctets", () => {
  test("no NUL (or stripped ones) is accepted; refused ones are 550 5.6.0", () => {
    expect(nulOctets(ctx({}))).toEqual({ kind: "accept" });
    expect(nulOctets(ctx({ nulOctets: true }))).toMatchObject({ kind: "reject", code: 550, status: "5.6.0", reason: "nul octets" });
  });
});
