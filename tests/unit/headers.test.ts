// Header sections (src/smtp/headers.ts): fields we do not touch go on byte for byte.

import { describe, expect, test } from "bun:test";
import { dropHeaders, parseHeaders } from "../../src/smtp/headers.ts";

const HEAD = [
  "Received: from client.example (client.example [192.0.2.1])\r\n",
  "\tby mx.example.org with ESMTP; Tue, 5 Mar 2024 12:00:00 +0000\r\n",
  "Authentication-Results: mx.example.org;\r\n",
  "  spf=pass smtp.mailfrom=sender.example;\r\n",
  "\tdkim=pass header.d=sender.example\r\n",
  "Subject:   odd   spacing  \r\n",
  "X-Empty:\r\n",
  "From :Alice <alice@sender.example>\r\n",
  "Subject: caf\xe9 (latin1)\r\n",
].join("");

describe("parseHeaders", () => {
  test("each field with its name, unfolded value and raw lines", () => {
    const { fields, rest } = parseHeaders(HEAD + "\r\n");
    expect(fields.map((f) => [f.name, f.value])).toEqual([
      ["Received", "from client.example (client.example [192.0.2.1])\tby mx.example.org with ESMTP; Tue, 5 Mar 2024 12:00:00 +0000"],
      ["Authentication-Results", "mx.example.org;  spf=pass smtp.mailfrom=sender.example;\tdkim=pass header.d=sender.example"],
      ["Subject", "odd   spacing"],
      ["X-Empty", ""],
      ["From", "Alice <alice@sender.example>"],
      ["Subject", "caf\xe9 (latin1)"],
    ]);
    expect(fields[0]!.raw).toBe("Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example.org with ESMTP; Tue, 5 Mar 2024 12:00:00 +0000\r\n");
    expect(fields[2]!.raw).toBe("Subject:   odd   spacing  \r\n");
    expect(fields.map((f) => f.raw).join("")).toBe(HEAD);
    expect(rest).toBe("\r\n");
  });

  test("the blank line and whatever follows it are left in rest", () => {
    const { fields, rest } = parseHeaders("Subject: hi\r\n\r\nbody line\r\nTo: not a header\r\n");
    expect(fields.map((f) => f.name)).toEqual(["Subject"]);
    expect(rest).toBe("\r\nbody line\r\nTo: not a header\r\n");
  });

  test("a section without its blank line leaves rest empty", () => {
    expect(parseHeaders("Subject: hi\r\nTo: b@example.org\r\n")).toEqual({
      fields: [
        { name: "Subject", value: "hi", raw: "Subject: hi\r\n" },
        { name: "To", value: "b@example.org", raw: "To: b@example.org\r\n" },
      ],
      rest: "",
    });
  });

  test("a last line without CRLF, folded or not, is kept as it is", () => {
    expect(parseHeaders("Subject: hi\r\nX-Tail: a").fields.map((f) => f.raw)).toEqual(["Subject: hi\r\n", "X-Tail: a"]);
    expect(parseHeaders("X-Tail: a\r\n b").fields).toEqual([{ name: "X-Tail", value: "a b", raw: "X-Tail: a\r\n b" }]);
  });

  test("a line without a colon is a field named by the whole line", () => {
    expect(parseHeaders("garbage line\r\nSubject: x\r\n").fields.map((f) => [f.name, f.value])).toEqual([
      ["garbage line", ""],
      ["Subject", "x"],
    ]);
  });

  test("an empty section has no fields", () => {
    expect(parseHeaders("")).toEqual({ fields: [], rest: "" });
    expect(parseHeaders("\r\nbody")).toEqual({ fields: [], rest: "\r\nbody" });
  });
});

describe("dropHeaders", () => {
  const BODY = "\r\nbody: not a header\r\n";

  test("dropping nothing gives back the exact input", () => {
    expect(dropHeaders(HEAD + BODY, () => false)).toBe(HEAD + BODY);
  });

  test("a folded field goes whole, every other byte stays", () => {
    const out = dropHeaders(HEAD + BODY, (name) => name.toLowerCase() === "authentication-results");
    expect(out).toBe(
      [
        "Received: from client.example (client.example [192.0.2.1])\r\n",
        "\tby mx.example.org with ESMTP; Tue, 5 Mar 2024 12:00:00 +0000\r\n",
        "Subject:   odd   spacing  \r\n",
        "X-Empty:\r\n",
        "From :Alice <alice@sender.example>\r\n",
        "Subject: caf\xe9 (latin1)\r\n",
      ].join("") + BODY,
    );
  });

  test("the predicate sees each name as written and its unfolded value", () => {
    const seen: [string, string][] = [];
    dropHeaders(HEAD, (name, value) => (seen.push([name, value]), false));
    expect(seen[1]).toEqual(["Authentication-Results", "mx.example.org;  spf=pass smtp.mailfrom=sender.example;\tdkim=pass header.d=sender.example"]);
    expect(seen).toHaveLength(6);
  });

  test("can select by value: only the matching one of two same-named fields goes", () => {
    const head = "Authentication-Results: mx.example.org; spf=pass\r\nAuthentication-Results: other.example;\r\n dkim=fail\r\n\r\n";
    expect(dropHeaders(head, (n, v) => n === "Authentication-Results" && v.startsWith("mx.example.org;"))).toBe(
      "Authentication-Results: other.example;\r\n dkim=fail\r\n\r\n",
    );
  });

  test("the first and the last field can go", () => {
    const head = "A: 1\r\nB: 2\r\n\t2b\r\nC: 3\r\n\r\n";
    expect(dropHeaders(head, (n) => n === "A" || n === "C")).toBe("B: 2\r\n\t2b\r\n\r\n");
    expect(dropHeaders(head, () => true)).toBe("\r\n");
  });
});
