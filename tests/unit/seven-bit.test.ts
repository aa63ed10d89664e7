// The 8BITMIME downgrade (mime/seven-bit.ts): 8-bit parts come out as quoted-printable (text)
// or base64 (anything else) whose decoded content is the original, other parts byte for byte,
// and a structure mailsplit refuses fails permanently instead of going out raw. Decoding here
// is done independently (Buffer's base64, a small QP decoder), not with the same library.

import { describe, expect, test } from "bun:test";
import { Readable } from "node:stream";
import { isPermanentConversionFailure, sevenBit } from "../../src/mime/seven-bit.ts";

async function convert(input: Buffer): Promise<{ out: Buffer; converted: number; failure: Error | null }> {
  const s = await sevenBit(Readable.from([input]));
  const chunks: Buffer[] = [];
  try {
    for await (const c of s.stream) chunks.push(c as Buffer);
  } catch {
    // the failure is reported by failure()
  }
  return { out: Buffer.concat(chunks), converted: s.converted(), failure: s.failure() };
}

/** RFC 2045 6.7: soft breaks removed, =XX decoded. */
const qpDecode = (s: string) => Buffer.from(s.replace(/=\r\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), "latin1");

/** The parts of a multipart body by its boundary: headers and raw body of each. */
function parts(message: Buffer, boundary: string): { headers: string; body: string }[] {
  const text = message.toString("latin1");
  return text
    .split(`\r\n--${boundary}`)
    .slice(1, -1)
    .map((p) => {
      const i = p.indexOf("\r\n\r\n");
      return { headers: p.slice(2, i + 2), body: p.slice(i + 4) };
    });
}

const utf8 = (s: string) => Buffer.from(s, "utf8").toString("latin1");
const binary = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x0d, 0x0a, 0x41, 0xc3]);
const text8 = utf8("Grüße aus Köln = 100 % \r\n.leading dot\r\n" + "ä".repeat(600));
const message = Buffer.from(
  "Received: from a by b; Mon, 1 Jan 2026 00:00:00 +0000\r\n" +
    "From: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n" +
    'Content-Type: multipart/mixed; boundary="outer"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    "preamble\r\n" +
    "--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text8 + "\r\n" +
    "--outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + binary.toString("latin1") + "\r\n" +
    "--outer\r\nContent-Type: text/plain\r\n\r\nplain ascii, kept as is\r\n" +
    "--outer\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 7bit\r\n\r\nmislabelled: caf\xe9\r\n" +
    "--outer\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n" +
    "--outer--\r\nepilogue\r\n",
  "latin1",
);

describe("sevenBit", () => {
  test("8-bit parts are re-encoded, the others kept byte for byte; the decoded content is the original", async () => {
    const { out, converted, failure } = await convert(message);
    expect(failure).toBeNull();
    expect(converted).toBe(3);
    expect(out.toString("latin1")).toMatch(/^[\x00-\x7f]*$/);
    for (const l of out.toString("latin1").split("\r\n")) expect(l.length).toBeLessThanOrEqual(998);
    const text = out.toString("latin1");
    // The header section is untouched but for the composite's encoding label (RFC 2045 6.4).
    expect(text.slice(0, text.indexOf("\r\n\r\n"))).toBe(
      "Received: from a by b; Mon, 1 Jan 2026 00:00:00 +0000\r\nFrom: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n" +
        'Content-Type: multipart/mixed; boundary="outer"\r\nContent-Transfer-Encoding: 7bit',
    );
    const p = parts(out, "outer");
    expect(p).toHaveLength(5);
    expect(p[0]!.headers).toBe("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n");
    expect(qpDecode(p[0]!.body).toString("latin1")).toBe(text8);
    expect(p[1]!.headers).toBe("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n");
    expect(Buffer.from(p[1]!.body, "base64").equals(binary)).toBe(true);
    expect(p[2]).toEqual({ headers: "Content-Type: text/plain\r\n", body: "plain ascii, kept as is" });
    expect(p[3]!.headers).toContain("Content-Transfer-Encoding: quoted-printable");
    expect(qpDecode(p[3]!.body).toString("latin1")).toBe("mislabelled: caf\xe9");
    expect(p[4]).toEqual({ headers: "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n", body: "iVBORw0KGgo=" });
    expect(text).toStartWith(message.toString("latin1").slice(0, 50));
    expect(text).toContain("\r\npreamble\r\n--outer\r\n");
    expect(text).toEndWith("\r\n--outer--\r\nepilogue\r\n");
  });

  test("a 7-bit message comes out byte for byte", async () => {
    const plain = Buffer.from("From: a@example.org\r\nSubject: x\r\n\r\nline\r\n.\r\n..dots\r\n\r\n");
    const { out, converted } = await convert(plain);
    expect(converted).toBe(0);
    expect(out.equals(plain)).toBe(true);
  });

  test("a message without MIME headers gets MIME-Version and the encoding below its other fields", async () => {
    const { out } = await convert(Buffer.from(`Received: x\r\nSubject: y\r\n\r\n${utf8("Grüße")}\r\n`, "latin1"));
    expect(out.toString("latin1")).toBe("Received: x\r\nSubject: y\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n");
  });

  test("an embedded message/rfc822 is converted inside and relabelled 7bit", async () => {
    const inner = `Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${utf8("ünïcode")}\r\n`;
    const outer = Buffer.from(`Subject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${inner}--b--\r\n`, "latin1");
    const { out, converted } = await convert(outer);
    expect(converted).toBe(1);
    const text = out.toString("latin1");
    expect(text).toMatch(/^[\x00-\x7f]*$/);
    expect(text).toContain("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\n");
    expect(text).toContain("Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BCn=C3=AFcode");
  });

  test("an attached message (not parsed) with 8-bit content is quoted-printable encoded rather than sent raw", async () => {
    const inner = `Subject: ${utf8("grüß")}\r\n\r\n${utf8("ü")}\r\n`;
    const outer = Buffer.from(`Subject: att\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${inner}--b--\r\n`, "latin1");
    const { out, converted } = await convert(outer);
    expect(converted).toBe(1);
    const p = parts(out, "b");
    expect(p[0]!.headers).toContain("Content-Transfer-Encoding: quoted-printable");
    expect(qpDecode(p[0]!.body).toString("latin1")).toBe(inner.slice(0, -2));
    expect(out.toString("latin1")).toMatch(/^[\x00-\x7f]*$/);
  });

  test("a 7bit-labelled part whose 8-bit octets come after the first 64 KiB is still converted", async () => {
    const body = "a".repeat(100 * 1024) + "\xe9\r\n";
    const { out, converted } = await convert(Buffer.from(`Subject: late\r\nContent-Type: text/plain\r\n\r\n${body}`, "latin1"));
    expect(converted).toBe(1);
    expect(out.toString("latin1")).toMatch(/^[\x00-\x7f]*$/);
    expect(qpDecode(out.toString("latin1").split("\r\n\r\n")[1]!).toString("latin1")).toBe(body);
  });

  test("more parts than mailsplit allows: a permanent failure, never raw output", async () => {
    const many = Array.from({ length: 1200 }, (_, i) => `--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe9${i}\r\n`).join("");
    const { failure } = await convert(Buffer.from(`Subject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n${many}--b--\r\n`, "latin1"));
    expect(failure).not.toBeNull();
    expect(isPermanentConversionFailure(failure)).toBe(true);
  });
});
