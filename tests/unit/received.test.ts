import { describe, expect, test } from "bun:test";
import { createRequire } from "node:module";
import { receivedHeader, rfc5322Date, type TraceInfo } from "../../src/smtp/received.ts";

// mailauth's own Received parser, as a receiving system's filter would read our header.
type Clause = { value: string; comment?: string };
const { parseReceived, getClientAddress } = createRequire(import.meta.url)("mailauth/lib/parse-received.js") as {
  parseReceived: (header: string) => Record<string, Clause | string | undefined>;
  getClientAddress: (from: unknown) => string | false;
};

const DATE = new Date(Date.UTC(2024, 2, 5, 7, 8, 9)); // Tue, 5 Mar 2024 07:08:09 UTC

function trace(over: Partial<TraceInfo> & { helo?: string; hostname?: string; ip?: string } = {}): TraceInfo {
  const { helo = "client.example.org", hostname = "client.example.org", ip = "192.0.2.10", ...rest } = over;
  return {
    client: { ip, port: 50123, hostname, helo, secure: false, trusted: false, user: null },
    byHost: "mx.example.net",
    protocol: "ESMTP",
    queueId: "01HQZ3Y8K2M4N6P8",
    tls: null,
    forRecipient: null,
    date: DATE,
    ...rest,
  };
}

/** The header's lines, each of which must end in CRLF. */
function lines(header: string): string[] {
  expect(header.endsWith("\r\n")).toBe(true);
  const body = header.slice(0, -2);
  expect(body.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
  return body.split("\r\n");
}

describe("receivedHeader", () => {
  test("RFC 5321 4.4 shape: from helo (rdns [ip]) by host with protocol id; date", () => {
    expect(receivedHeader(trace())).toBe(
      "Received: from client.example.org (client.example.org [192.0.2.10])\r\n" +
        "\tby mx.example.net (mailraven) with ESMTP id 01HQZ3Y8K2M4N6P8;\r\n" +
        "\tTue, 5 Mar 2024 07:08:09 +0000\r\n",
    );
  });

  test("continuation lines are folded with whitespace so it is one header", () => {
    const [first, ...rest] = lines(receivedHeader(trace({ forRecipient: "a@b.example", tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" } })));
    expect(first).toStartWith("Received: ");
    expect(rest.length).toBeGreaterThan(0);
    for (const l of rest) expect(l).toMatch(/^[\t ]\S/);
  });

  test("a standard parser reads from, by, with, id, the client address and the date", () => {
    const parsed = parseReceived(receivedHeader(trace({ ip: "2001:db8::10" })));
    expect(parsed.from).toEqual({ value: "client.example.org", comment: "client.example.org [2001:db8::10]" });
    expect((parsed.by as Clause).value).toBe("mx.example.net");
    expect((parsed.with as Clause).value).toBe("ESMTP");
    expect((parsed.id as Clause).value).toBe("01HQZ3Y8K2M4N6P8");
    expect(parsed.for).toBeUndefined();
    expect(parsed.timestamp).toBe("Tue, 5 Mar 2024 07:08:09 +0000");
    expect(getClientAddress(parsed.from)).toBe("2001:db8::10");
  });

  test("`for <x>` appears only when forRecipient is given", () => {
    expect(receivedHeader(trace())).not.toContain(" for ");
    const h = receivedHeader(trace({ forRecipient: "bob@example.org" }));
    expect(h).toContain("id 01HQZ3Y8K2M4N6P8\r\n\tfor <bob@example.org>;\r\n");
    expect((parseReceived(h).for as Clause).value).toBe("<bob@example.org>");
  });

  test("TLS version and cipher are noted when the session is encrypted", () => {
    const h = receivedHeader(trace({ tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" } }));
    expect(h).toContain("[192.0.2.10])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\tby ");
  });

  test("a client hostname of [ip] (no reverse DNS) is written as unknown", () => {
    expect(receivedHeader(trace({ hostname: "[192.0.2.10]" }))).toStartWith("Received: from client.example.org (unknown [192.0.2.10])\r\n");
  });

  test("an empty HELO is written as unknown", () => {
    expect(receivedHeader(trace({ helo: "" }))).toStartWith("Received: from unknown (");
  });

  test.each([
    ["CRLF and a new header", "evil.example\r\nX-Injected: yes"],
    ["bare LF", "evil.example\nBcc: victim@example.org"],
    ["bare CR", "evil.example\rX-Injected: yes"],
    ["parentheses faking the TCP-info comment", "evil.example (trusted.example [10.0.0.1])"],
    ["unbalanced parenthesis", "evil.example)"],
    ["angle brackets", "<evil@example.org>"],
    ["backslash", "evil\\)"],
    ["a semicolon hiding the date", "evil; Mon, 1 Jan 2001 00:00:00 +0000"],
    ["a double quote swallowing the rest", 'evil"'],
    ["non-ASCII and control characters", "évil\u0000\u001b\u007f.example"],
  ])("HELO with %s cannot break the header", (_name, helo) => {
    const h = receivedHeader(trace({ helo }));
    const ls = lines(h);
    expect(ls).toHaveLength(3);
    expect(ls[0]).toEndWith("(client.example.org [192.0.2.10])");
    // The from value is a single token, with nothing the client sent left to open or close a comment.
    const fromValue = ls[0]!.slice("Received: from ".length, ls[0]!.indexOf(" ("));
    expect(fromValue).toMatch(/^[\x21-\x7e]+$/);
    expect(fromValue).not.toMatch(/[()<>\\;"]/);
    const parsed = parseReceived(h);
    expect(getClientAddress(parsed.from)).toBe("192.0.2.10");
    expect((parsed.by as Clause).value).toBe("mx.example.net");
    expect(parsed.timestamp).toBe("Tue, 5 Mar 2024 07:08:09 +0000");
  });

  test("a reverse DNS name with parentheses or line breaks cannot break the header either", () => {
    const h = receivedHeader(trace({ hostname: "x (y [10.0.0.1])\r\nX-Evil: 1" }));
    expect(lines(h)).toHaveLength(3);
    expect(getClientAddress(parseReceived(h).from)).toBe("192.0.2.10");
  });

  test("a long HELO is bounded", () => {
    const h = receivedHeader(trace({ helo: "a".repeat(5000) }));
    expect(lines(h)[0]!.length).toBeLessThan(400);
  });

  test("recipient in `for` is cleaned of brackets and line breaks", () => {
    const h = receivedHeader(trace({ forRecipient: "bob@example.org>\r\nX-Evil: 1" }));
    expect(lines(h)).toHaveLength(4);
    expect(h).toContain("\tfor <bob@example.orgX-Evil:1>;\r\n");
  });
});

describe("rfc5322Date", () => {
  test("day-of-week, day month year time +0000, in UTC", () => {
    expect(rfc5322Date(DATE)).toBe("Tue, 5 Mar 2024 07:08:09 +0000");
    expect(rfc5322Date(new Date(Date.UTC(1999, 11, 31, 23, 59, 59)))).toBe("Fri, 31 Dec 1999 23:59:59 +0000");
    expect(rfc5322Date(new Date(0))).toBe("Thu, 1 Jan 1970 00:00:00 +0000");
  });

  test("matches the RFC 5322 date-time grammar and round-trips through Date.parse to the second", () => {
    for (const t of [0, 951_782_400_000, 1_709_622_489_000, Date.UTC(2038, 0, 19, 3, 14, 7)]) {
      const s = rfc5322Date(new Date(t + 999));
      expect(s).toMatch(/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} \+0000$/);
      expect(Date.parse(s)).toBe(t);
    }
  });
});
