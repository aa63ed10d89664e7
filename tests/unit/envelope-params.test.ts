// Strict MAIL FROM / RCPT TO arguments and path bytes (RFC 5321, 1870, 3461, 6152, 6531).

import { describe, expect, test } from "bun:test";
import { checkMail, checkRcpt } from "../../src/smtp/envelope-params.ts";
import { mailboxProblem } from "../../src/mail/mailbox-syntax.ts";
import { decodeXtext, isXtext } from "../../src/mail/xtext.ts";

const line = (s: string | number[]) => (typeof s === "string" ? Buffer.from(s, "latin1") : Buffer.from(s));
const mail = (s: string, auth = false) => checkMail(line(s), { maxSize: 1000, auth, dsn: true });
const rcpt = (s: string, smtputf8 = false) => checkRcpt(line(s), smtputf8);
const utf8Path = (prefix: string, bytes: number[], suffix: string) => [...Buffer.from(prefix), ...bytes, ...Buffer.from(suffix)];

describe("MAIL FROM parameters", () => {
  test.each([
    "MAIL FROM:<a@b.test>",
    "MAIL FROM:<>",
    "MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bdef",
    "mail from:<a@b.test> body=7bit ret=full",
    "MAIL FROM:<@relay.test:a@b.test>",
  ])("accepted: %s", (s) => expect(mail(s)).toBeNull());

  test.each([
    ["MAIL FROM:<a@b.test> XJUNK=1", 555, "Unsupported parameter XJUNK"],
    ["MAIL FROM:<a@b.test> REQUIRETLS", 555, "Unsupported parameter REQUIRETLS"],
    ["MAIL FROM:<a@b.test> AUTH=<>", 555, "Unsupported parameter AUTH"],
    ["MAIL FROM:<a@b.test> RET=NOPE", 501, "Bad RET parameter: FULL or HDRS"],
    ["MAIL FROM:<a@b.test> RET", 501, "Bad RET parameter: FULL or HDRS"],
    ["MAIL FROM:<a@b.test> BODY=BINARYMIME", 501, "Bad BODY parameter: 7BIT or 8BITMIME"],
    ["MAIL FROM:<a@b.test> SIZE=12a", 501, "Bad message size syntax"],
    ["MAIL FROM:<a@b.test> SIZE=123456789012345678901", 501, "Bad message size syntax"],
    ["MAIL FROM:<a@b.test> SMTPUTF8=yes", 501, "SMTPUTF8 takes no value"],
    ["MAIL FROM:<a@b.test> ENVID=a+zz", 501, "Bad ENVID parameter syntax"],
    ["MAIL FROM:<a@b.test> ENVID=a+0D+0Ab", 501, "Bad ENVID parameter syntax"],
    [`MAIL FROM:<a@b.test> ENVID=${"x".repeat(101)}`, 501, "Bad ENVID parameter syntax"],
    ["MAIL FROM:<a@b.test> RET=FULL RET=HDRS", 501, "Duplicate RET parameter"],
    ["MAIL FROM:<a@b.test> =x", 501, "Bad parameter syntax"],
    ["MAIL FROM:<a@b.test> SIZE=1001", 552, "Message size exceeds fixed limit of 1000 bytes"],
  ])("%s -> %d", (s, code, text) => {
    expect(mail(s)).toEqual({ code, status: code === 552 ? "5.3.4" : "5.5.4", text });
  });

  test("AUTH= on a listener that offers AUTH: <> or xtext", () => {
    expect(mail("MAIL FROM:<a@b.test> AUTH=<>", true)).toBeNull();
    expect(mail("MAIL FROM:<a@b.test> AUTH=alice+40b.test", true)).toBeNull();
    expect(mail("MAIL FROM:<a@b.test> AUTH=al+zz", true)?.code).toBe(501);
  });
});

describe("RCPT TO parameters", () => {
  test.each(["RCPT TO:<bob@b.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob+40b.test", "RCPT TO:<bob@b.test> NOTIFY=never", "RCPT TO:<postmaster>", "RCPT TO:<Postmaster>"])("accepted: %s", (s) =>
    expect(rcpt(s)).toBeNull(),
  );

  test.each([
    ["RCPT TO:<bob@b.test> NOTIFY=NEVER,SUCCESS", 501],
    ["RCPT TO:<bob@b.test> NOTIFY=SOMETIMES", 501],
    ["RCPT TO:<bob@b.test> NOTIFY=", 501],
    ["RCPT TO:<bob@b.test> ORCPT=bob@b.test", 501],
    ["RCPT TO:<bob@b.test> ORCPT=rfc822;", 501],
    ["RCPT TO:<bob@b.test> ORCPT=rfc822;a+zz", 501],
    [`RCPT TO:<bob@b.test> ORCPT=rfc822;${"x".repeat(500)}`, 501],
    ["RCPT TO:<bob@b.test> XJUNK", 555],
    ["RCPT TO:<bob@b.test> SIZE=10", 555],
  ])("%s -> %d", (s, code) => {
    expect(rcpt(s)?.code).toBe(code);
    expect(rcpt(s)?.status).toBe("5.5.4");
  });
});

describe("path bytes: 553 5.6.7", () => {
  const refused = (r: ReturnType<typeof rcpt>) => expect(r).toMatchObject({ code: 553, status: "5.6.7" });

  test("unterminated or misplaced quotes, an empty local part", () => {
    refused(mail('MAIL FROM:<"foo@b.test>'));
    refused(mail('MAIL FROM:<"foo bar@b.test> SIZE=10'));
    refused(rcpt('RCPT TO:<"foo"bar@b.test>'));
    refused(rcpt('RCPT TO:<foo"bar"@b.test>'));
    refused(rcpt("RCPT TO:<@b.test>"));
    refused(rcpt("RCPT TO:<@relay.test:@b.test>"));
    expect(rcpt('RCPT TO:<"foo bar"@b.test>')).toBeNull();
    expect(rcpt('RCPT TO:<"foo\\"bar"@b.test>')).toBeNull();
  });

  test.each([
    ["overlong", [0xc0, 0xaf]],
    ["surrogate", [0xed, 0xa0, 0x80]],
    ["above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["truncated", [0xe2, 0x82]],
    ["lone continuation", [0x80]],
  ])("invalid UTF-8 (%s), with or without SMTPUTF8", (_n, bytes) => {
    const r = checkRcpt(line(utf8Path("RCPT TO:<a", bytes, "@b.test>")), true);
    expect(r).toEqual({ code: 553, status: "5.6.7", text: "Address is not valid UTF-8" });
    expect(checkMail(line(utf8Path("MAIL FROM:<a", bytes, "@b.test> SMTPUTF8")), { maxSize: 1000, auth: false, dsn: true })?.text).toBe("Address is not valid UTF-8");
  });

  test("non-ASCII needs SMTPUTF8 (RFC 6531 3.4)", () => {
    const joerg = utf8Path("RCPT TO:<j", [0xc3, 0xb6], "rg@b.test>");
    expect(checkRcpt(line(joerg), false)).toEqual({ code: 553, status: "5.6.7", text: "Non-ASCII address needs SMTPUTF8" });
    expect(checkRcpt(line(joerg), true)).toBeNull();
    expect(checkMail(line(utf8Path("MAIL FROM:<j", [0xc3, 0xb6], "rg@b.test>")), { maxSize: 1, auth: false, dsn: true })?.code).toBe(553);
    expect(checkMail(line(utf8Path("MAIL FROM:<j", [0xc3, 0xb6], "rg@b.test> SMTPUTF8")), { maxSize: 1, auth: false, dsn: true })).toBeNull();
  });

  test("DSN parameters are unknown where DSN is not offered", () => {
    expect(checkMail(line("MAIL FROM:<a@b.test> RET=FULL"), { maxSize: 1, auth: false, dsn: false })?.code).toBe(555);
    expect(checkRcpt(line("RCPT TO:<a@b.test> NOTIFY=NEVER"), false, false)?.code).toBe(555);
  });

  test("lines without a bracketed path are left to smtp-server (501)", () => {
    expect(mail("MAIL FROM:a@b.test")).toBeNull();
    expect(rcpt("RCPT TO:<<bob@b.test>>")).toBeNull();
  });
});

describe("primitives", () => {
  test("xtext", () => {
    expect(isXtext("rfc822;bob+40b.test")).toBe(true);
    expect(isXtext("a+2b")).toBe(false); // lower-case hex is not xtext
    expect(isXtext("a=b")).toBe(false);
    expect(isXtext("a b")).toBe(false);
    expect(decodeXtext("rfc822;bob+40b.test")).toBe("rfc822;bob@b.test");
  });
  test("UTF-8", () => {
    expect(mailboxProblem(Buffer.from("jörg@b.test", "utf8"), true)).toBeNull();
    for (const bad of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
      expect(mailboxProblem(Buffer.from([0x61, ...bad, 0x40, 0x62]), true)).toBe("invalid-utf8");
    }
  });
  test("mailboxProblem", () => {
    expect(mailboxProblem(Buffer.from('""@b.test'), false)).toBeNull();
    expect(mailboxProblem(Buffer.from("postmaster"), false)).toBeNull();
  });
});
