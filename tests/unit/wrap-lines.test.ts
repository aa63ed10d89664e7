// Long lines never leave long (RFC 5321 4.5.3.1.6): header lines folded at whitespace or
// broken with CRLF SP, body lines broken with CRLF, whatever the chunking of the input, with
// nothing lost and no UTF-8 sequence split.

import { describe, expect, test } from "bun:test";
import { ContentScan, MAX_LINE, shapeOf } from "../../src/mime/scan.ts";
import { LineWrapper, wrapBytes } from "../../src/mime/wrap-lines.ts";

/** Feeds `input` in pieces of `size` octets. */
function wrapChunked(input: Buffer, size: number): Buffer {
  const w = new LineWrapper();
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; i += size) out.push(...w.push(input.subarray(i, i + size)));
  out.push(...w.end());
  return Buffer.concat(out);
}

const lines = (b: Buffer) => b.toString("latin1").split("\r\n");
/** Unfolds a header section (RFC 5322 2.2.3). */
const unfold = (head: string) => head.replace(/\r\n(?=[ \t])/g, "");

describe("LineWrapper", () => {
  const subject = "Subject: " + Array.from({ length: 300 }, (_, i) => `word${i}`).join(" ");
  const token = "X-Token: " + "a".repeat(2500);
  const body = "b".repeat(2100) + "\r\nshort line\r\n" + "c".repeat(998) + "\r\n";
  const message = Buffer.from(`${subject}\r\n${token}\r\n\r\n${body}`);

  for (const size of [1, 7, 333, 998, 999, 1000, 65536]) {
    test(`every line fits, and the content is the same once unfolded (chunks of ${size})`, () => {
      const out = wrapChunked(message, size);
      for (const l of lines(out)) expect(l.length).toBeLessThanOrEqual(MAX_LINE);
      const text = out.toString("latin1");
      const [head, ...rest] = text.split("\r\n\r\n");
      // Folding at whitespace unfolds to the original field; a forced break adds one space per break.
      expect(unfold(head!).split("\r\n")[0]).toBe(subject);
      expect(unfold(head!).split("\r\n")[1]!.replace(/ /g, "")).toBe(token.replace(/ /g, ""));
      // Body: breaks are plain CRLF, so removing them gives the original.
      expect(rest.join("\r\n\r\n").replace(/\r\n/g, "")).toBe(body.replace(/\r\n/g, ""));
      expect(shapeOf(out).longLines).toBe(false);
    });
  }

  test("header lines are folded at the last whitespace that fits; the continuation starts with it", () => {
    const out = lines(wrapBytes(Buffer.from(`${subject}\r\n\r\nx\r\n`)));
    expect(out[0]!.length).toBeLessThanOrEqual(MAX_LINE);
    expect(out[0]!.length).toBeGreaterThan(MAX_LINE - 10);
    expect(out[1]).toMatch(/^ word\d+/);
  });

  test("a header line without whitespace is broken with CRLF SP; the body with CRLF alone", () => {
    const out = lines(wrapBytes(Buffer.from(`X-Token:${"a".repeat(1500)}\r\n\r\n${"b".repeat(1500)}\r\n`)));
    expect(out.map((l) => l.length)).toEqual([998, 1508 - 998 + 1, 0, 998, 502, 0]);
    expect(out[1]).toStartWith(" a");
    expect(out[4]).toStartWith("b");
  });

  test("lines of exactly 998 octets and short messages are left exactly as they are", () => {
    const exact = Buffer.from(`Subject: ${"s".repeat(989)}\r\n\r\n${"x".repeat(998)}\r\n.\r\n..\r\nend`);
    for (const size of [1, 3, 999]) expect(wrapChunked(exact, size).equals(exact)).toBe(true);
  });

  test("a 2 MiB line without any line break is broken into lines of at most 998", () => {
    const huge = Buffer.concat([Buffer.from("Subject: x\r\n\r\n"), Buffer.alloc(2 * 1024 * 1024, 0x41)]);
    const out = wrapChunked(huge, 65536);
    const l = lines(out);
    expect(Math.max(...l.map((x) => x.length))).toBe(998);
    expect(out.length).toBe(huge.length + 2 * (l.length - 3));
  });

  test("a break never splits a UTF-8 sequence", () => {
    const text = "ü".repeat(1200); // 2 octets each
    const out = wrapBytes(Buffer.from(`Subject: ${text}\r\n\r\n${text}\r\n`, "utf8"));
    for (const l of lines(out)) {
      expect(Buffer.byteLength(l, "latin1")).toBeLessThanOrEqual(MAX_LINE);
      expect(Buffer.from(l, "latin1").toString("utf8")).not.toContain("\ufffd");
    }
  });

  test("a CR at the end of a chunk followed by LF in the next is one line end", () => {
    const msg = Buffer.from(`A: b\r\n\r\n${"x".repeat(998)}\r\nnext\r\n`);
    const at = msg.indexOf("\r\nnext") + 1; // split between CR and LF
    const w = new LineWrapper();
    const out = Buffer.concat([...w.push(msg.subarray(0, at)), ...w.push(msg.subarray(at)), ...w.end()]);
    expect(out.equals(msg)).toBe(true);
  });
});

describe("ContentScan", () => {
  test("finds 8-bit octets and lines over 998 octets across chunk boundaries", () => {
    expect(shapeOf(Buffer.from(`${"a".repeat(998)}\r\n`))).toEqual({ eightBit: false, longLines: false });
    expect(shapeOf(Buffer.from(`${"a".repeat(999)}\r\n`))).toEqual({ eightBit: false, longLines: true });
    expect(shapeOf(Buffer.from("a".repeat(999)))).toEqual({ eightBit: false, longLines: true });
    expect(shapeOf(Buffer.from("Grüße\r\n"))).toEqual({ eightBit: true, longLines: false });
    for (const [text, long] of [[`${"a".repeat(998)}\r\n`, false], [`${"a".repeat(999)}\r\n`, true]] as const) {
      for (const size of [1, 2, 7, 500]) {
        const scan = new ContentScan();
        const b = Buffer.from(`x\r\n${text}y\r\n`);
        for (let i = 0; i < b.length; i += size) scan.push(b.subarray(i, i + size));
        expect(scan.shape.longLines).toBe(long);
      }
    }
  });
});
