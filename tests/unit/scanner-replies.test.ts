// The spamd and clamd reply parsers and the X-Spam-* header builder, on replies as the daemons
// send them (captured from Debian's spamd 4.0.1 and clamd 1.4.6) and on hostile ones.

import { describe, expect, test } from "bun:test";
import { parseClamdReply, signatureName } from "../../src/checks/content/clamd.ts";
import { parseSpamdReply, spamHeaders } from "../../src/checks/content/spamd.ts";

const b = (s: string) => Buffer.from(s, "latin1");

describe("parseSpamdReply", () => {
  test("a SYMBOLS reply: verdict, score, required score and rule names", () => {
    const symbols = "GTUBE,MISSING_DATE,MISSING_HEADERS,MISSING_MID,NO_HEADERS_MESSAGE,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO";
    const reply = `SPAMD/1.1 0 EX_OK\r\nContent-length: ${symbols.length}\r\nSpam: True ; 1004.2 / 5.0\r\n\r\n${symbols}`;
    expect(parseSpamdReply(b(reply))).toEqual({ spam: true, score: 1004.2, required: 5, symbols: symbols.split(",") });
  });

  test("a CHECK reply (no body) and a negative score", () => {
    expect(parseSpamdReply(b("SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.9 / 5.0\r\n\r\n"))).toEqual({ spam: false, score: -1.9, required: 5, symbols: [] });
  });

  test("an error status throws with spamd's text", () => {
    expect(() => parseSpamdReply(b("SPAMD/1.0 76 Bad header line: BOGUS SPAMC/1.5\r\n"))).toThrow("spamd answered 76 Bad header line: BOGUS SPAMC/1.5");
  });

  test("malformed or cut-short replies throw", () => {
    expect(() => parseSpamdReply(b(""))).toThrow("malformed");
    expect(() => parseSpamdReply(b("HTTP/1.1 200 OK\r\n\r\n"))).toThrow("malformed");
    expect(() => parseSpamdReply(b("SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1004.2 / 5.0\r\n"))).toThrow("header section");
    expect(() => parseSpamdReply(b("SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n"))).toThrow("no valid Spam: header");
    expect(() => parseSpamdReply(b("SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 6.0 / 5.0\r\n\r\nGTUBE"))).toThrow("not the 20 announced");
  });

  test("control characters in spamd's error text do not reach the message", () => {
    expect(() => parseSpamdReply(b("SPAMD/1.0 74 oops\x1b[2J\r\n"))).toThrow("spamd answered 74 oops?[2J");
  });

  test("rule names that are not plain names (CR, LF, spaces, colons) are dropped", () => {
    const body = "GTUBE,BAD\r\nX-Injected: yes,  SPACED ,OK_RULE,a:b,__META";
    const reply = `SPAMD/1.1 0 EX_OK\r\nContent-length: ${body.length}\r\nSpam: True ; 9.0 / 5.0\r\n\r\n${body}`;
    expect(parseSpamdReply(b(reply)).symbols).toEqual(["GTUBE", "SPACED", "OK_RULE", "__META"]);
  });
});

describe("spamHeaders", () => {
  const report = { spam: true, score: 7.25, required: 5, symbols: ["GTUBE", "NO_RELAYS"] };

  test("tagged: flag, score and status with our threshold as required", () => {
    expect(spamHeaders(report, 6)).toEqual(["X-Spam-Flag: YES", "X-Spam-Score: 7.3", "X-Spam-Status: Yes, score=7.3 required=6.0 tests=GTUBE,NO_RELAYS"]);
  });

  test("under the threshold: only a No status; no rules is tests=none", () => {
    expect(spamHeaders({ ...report, score: -0.04, symbols: [] }, 5)).toEqual(["X-Spam-Status: No, score=-0.0 required=5.0 tests=none"]);
  });

  test("a long rule list is cut at a whole name to fit in one 998-character line", () => {
    const symbols = Array.from({ length: 200 }, (_, i) => `SOME_LONG_RULE_NAME_${i}`);
    const [, , status] = spamHeaders({ ...report, symbols }, 5);
    expect(status!.length).toBeLessThanOrEqual(998);
    expect(status).toEndWith(",...");
    expect(status).toMatch(/tests=(SOME_LONG_RULE_NAME_\d+,)+\.\.\.$/);
    expect(status).not.toMatch(/[\r\n]/);
  });
});

describe("parseClamdReply", () => {
  test("clean", () => {
    expect(parseClamdReply(b("stream: OK\0"))).toEqual({ infected: false });
  });

  test("found, with the signature name", () => {
    expect(parseClamdReply(b("stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0"))).toEqual({ infected: true, signature: "Eicar-Test-Signature.UNOFFICIAL" });
    expect(parseClamdReply(b("stream: Win.Test.EICAR_HDB-1 FOUND\0"))).toEqual({ infected: true, signature: "Win.Test.EICAR_HDB-1" });
  });

  test("errors throw with clamd's text", () => {
    expect(() => parseClamdReply(b("INSTREAM size limit exceeded. ERROR\0"))).toThrow("clamd answered: INSTREAM size limit exceeded. ERROR");
    expect(() => parseClamdReply(b("COMMAND READ TIMED OUT\0"))).toThrow("clamd answered: COMMAND READ TIMED OUT");
    expect(() => parseClamdReply(b("stream: OK"))).toThrow("cut short");
    expect(() => parseClamdReply(b(""))).toThrow("cut short");
  });

  test("a hostile signature name is made printable and short before it reaches a reply", () => {
    const r = parseClamdReply(b(`stream: Evil\r\n250 OK (${"x".repeat(200)}) FOUND\0`));
    expect(r.infected).toBe(true);
    const sig = r.infected ? r.signature : "";
    expect(sig).toMatch(/^[A-Za-z0-9._:+-]{1,64}$/);
    expect(sig).toStartWith("Evil__250_OK__");
  });
});

describe("signatureName", () => {
  test("keeps ClamAV's usual characters, replaces the rest, never empty", () => {
    expect(signatureName("Sanesecurity.Foxhole.Zip_fs217:1.UNOFFICIAL")).toBe("Sanesecurity.Foxhole.Zip_fs217:1.UNOFFICIAL");
    expect(signatureName("a b\x00c")).toBe("a_b_c");
    expect(signatureName("")).toBe("unknown");
  });
});
