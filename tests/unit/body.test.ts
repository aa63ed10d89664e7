import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Spool } from "../../src/queue/spool.ts";
import { BodyCollector } from "../../src/smtp/body.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-body-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

function collector(opts: { inlineMax?: number; maxSize?: number } = {}): { c: BodyCollector; spool: Spool; id: string } {
  const spool = new Spool(join(root, `spool${n}`));
  const id = `MSG${String(n++).padStart(13, "0")}`;
  return { c: new BodyCollector(spool, id, opts.inlineMax ?? 1 << 20, opts.maxSize ?? 1 << 24), spool, id };
}

/** Feeds the chunks and reports whether a bare CR or LF was seen. */
async function bare(...chunks: string[]): Promise<boolean> {
  const { c } = collector();
  for (const ch of chunks) c.push(bytes(ch));
  c.end();
  await c.finish();
  return c.bareNewline;
}

describe("bare newline detection", () => {
  test("CRLF-only content is clean", async () => {
    expect(await bare("Subject: x\r\n\r\nline 1\r\nline 2\r\n")).toBe(false);
    expect(await bare("")).toBe(false);
    expect(await bare("no line end at all")).toBe(false);
  });

  test.each([
    ["bare LF in the middle", ["abc\ndef\r\n"]],
    ["bare LF at the start", ["\nabc\r\n"]],
    ["bare LF at the end", ["abc\r\ndef\n"]],
    ["bare CR in the middle", ["abc\rdef\r\n"]],
    ["bare CR before CRLF", ["abc\r\r\n"]],
    ["LF before CR (reversed)", ["abc\n\rdef"]],
    ["SMTP smuggling <LF>.<CR><LF>", ["hi\r\n\n.\r\nMAIL FROM:<x@y>\r\n"]],
    ["bare LF after clean lines", ["a\r\nb\r\nc\r\nd\ne\r\n"]],
  ])("%s", async (_name, chunks) => {
    expect(await bare(...chunks)).toBe(true);
  });

  test("CR at the end of one chunk and LF at the start of the next is a CRLF", async () => {
    expect(await bare("abc\r", "\ndef\r\n")).toBe(false);
    expect(await bare("abc\r\n", "def\r", "\n")).toBe(false);
    expect(await bare("\r", "\n", "\r", "\n")).toBe(false);
  });

  test("LF at the start of a chunk after a chunk ending in CR is fine, even after empty chunks", async () => {
    expect(await bare("abc\r", "", "\n")).toBe(false);
  });

  test("CR at the end of a chunk followed by anything but LF is a bare CR", async () => {
    expect(await bare("abc\r", "x")).toBe(true);
    expect(await bare("abc\r", "\r\n")).toBe(true);
    expect(await bare("abc\r", "", "x\r\n")).toBe(true);
  });

  test("LF at the start of a chunk after a chunk not ending in CR is a bare LF", async () => {
    expect(await bare("abc", "\ndef")).toBe(true);
    expect(await bare("abc\r\n", "\n")).toBe(true);
  });

  test("content ending in a lone CR is a bare CR", async () => {
    expect(await bare("abc\r\n", "def\r")).toBe(true);
  });

  test("a bare newline found early stays found", async () => {
    expect(await bare("a\nb", "clean\r\n", "clean\r\n")).toBe(true);
  });

  test("detection also works on bytes past the size limit", async () => {
    const { c } = collector({ maxSize: 8 });
    c.push(bytes("12345678"));
    c.push(bytes("x\ny"));
    await c.finish();
    expect(c.overLimit).toBe(true);
    expect(c.bareNewline).toBe(true);
  });
});

describe("inline bodies", () => {
  test("small bodies stay in memory; the header section is kept apart with its blank line", async () => {
    const { c, spool, id } = collector({ inlineMax: 1024 });
    c.push(bytes("Subject: hi\r\n\r\n"));
    c.push(bytes("body\r\n"));
    c.end();
    expect(c.headText()).toBe("Subject: hi\r\n\r\n");
    const out = await c.finish();
    expect(out).not.toBeNull();
    expect(new TextDecoder().decode(out!)).toBe("body\r\n");
    expect(c.size).toBe(21);
    expect(c.bodyLength).toBe(6);
    expect(existsSync(spool.pathOf(id))).toBe(false);
  });

  test("a body exactly at inlineMax stays inline", async () => {
    const { c, spool, id } = collector({ inlineMax: 10 });
    c.push(bytes("\r\n12345"));
    c.push(bytes("67890"));
    c.end();
    expect(c.headText()).toBe("\r\n");
    expect(await c.finish()).toEqual(bytes("1234567890"));
    expect(existsSync(spool.pathOf(id))).toBe(false);
  });

  test("an empty body is an empty array", async () => {
    const { c } = collector();
    expect(await c.finish()).toEqual(new Uint8Array(0));
  });
});

describe("spooling large bodies", () => {
  test("above inlineMax the body goes to the spool file with the exact bytes", async () => {
    const { c, spool, id } = collector({ inlineMax: 16 });
    const parts = ["Subject: big\r\n\r\n", "x".repeat(100) + "\r\n", "last line\r\n"];
    for (const p of parts) c.push(bytes(p));
    c.end();
    expect(await c.finish()).toBeNull();
    const path = spool.pathOf(id);
    expect(c.headText()).toBe(parts[0]!);
    expect(readFileSync(path, "utf8")).toBe(parts.slice(1).join(""));
    expect(c.bodyLength).toBe(parts.slice(1).join("").length);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("binary content survives spooling byte for byte", async () => {
    const { c, spool, id } = collector({ inlineMax: 100 });
    const all = new Uint8Array(5000);
    // Every octet but NUL, which is stripped by default (see "NUL octets" below).
    for (let i = 0; i < all.length; i++) all[i] = ((i * 31 + 7) % 255) + 1;
    c.push(bytes("\r\n"));
    for (let off = 0; off < all.length; off += 333) c.push(all.subarray(off, Math.min(off + 333, all.length)));
    expect(await c.finish()).toBeNull();
    expect(new Uint8Array(readFileSync(spool.pathOf(id)))).toEqual(all);
  });

  test("discard removes the spool file", async () => {
    const { c, spool, id } = collector({ inlineMax: 4 });
    c.push(bytes("\r\nmore than four bytes\r\n"));
    expect(existsSync(spool.pathOf(id))).toBe(true);
    c.discard();
    expect(existsSync(spool.pathOf(id))).toBe(false);
    expect(readdirSync(spool.dir)).toEqual([]);
  });

  test("discard after finish also removes the committed file", async () => {
    const { c, spool, id } = collector({ inlineMax: 4 });
    c.push(bytes("\r\nmore than four bytes\r\n"));
    expect(await c.finish()).toBeNull();
    expect(existsSync(spool.pathOf(id))).toBe(true);
    c.discard();
    expect(existsSync(spool.pathOf(id))).toBe(false);
  });
});

describe("size limit", () => {
  test("overLimit is set only once the client's bytes exceed maxSize", () => {
    const { c } = collector({ maxSize: 10 });
    c.push(bytes("12345"));
    c.push(bytes("67890"));
    expect(c.overLimit).toBe(false);
    expect(c.size).toBe(10);
    c.push(bytes("1"));
    expect(c.overLimit).toBe(true);
    expect(c.size).toBe(11);
  });

  test("bytes past the limit are counted but not kept", async () => {
    const { c } = collector({ maxSize: 10, inlineMax: 1000 });
    c.push(bytes("\r\n123"));
    c.push(bytes("67890abcdef"));
    c.push(bytes("more"));
    c.end();
    expect(c.size).toBe(20);
    expect(c.bodyLength).toBe(3);
    expect(await c.finish()).toEqual(bytes("123"));
  });

  test("an oversized body never grows the spool file past the limit", () => {
    const { c, spool, id } = collector({ maxSize: 100, inlineMax: 10 });
    c.push(bytes("\r\n"));
    for (let i = 0; i < 50; i++) c.push(bytes("0123456789"));
    expect(c.overLimit).toBe(true);
    expect(statSync(spool.pathOf(id)).size).toBeLessThanOrEqual(100);
    c.discard();
    expect(existsSync(spool.pathOf(id))).toBe(false);
  });
});

describe("BodyCollector hop counting", () => {
  const collect = (chunks: string[]) => {
    const dir = mkdtempSync(join(tmpdir(), "mr-hops-"));
    const c = new BodyCollector(new Spool(dir), "HOPS", 1 << 20, 1 << 20);
    for (const ch of chunks) c.push(new TextEncoder().encode(ch));
    c.end();
    rmSync(dir, { recursive: true, force: true });
    return c.hops;
  };
  test("counts Received: lines in the header section only, whatever the chunking", () => {
    const msg = "Received: from a\r\n\tby b; x\r\nRECEIVED: from c\r\nSubject: s\r\n\r\nReceived: in the body\r\n";
    expect(collect([msg])).toBe(2);
    expect(collect(msg.split(""))).toBe(2);
  });
  test("a message without a body still has its header section counted at the end", () => {
    expect(collect(["Received: x\r\nReceived: y\r\n"])).toBe(2);
  });
  test("no header section at all", () => {
    expect(collect(["\r\nReceived: body\r\n"])).toBe(0);
  });
});

describe("NUL octets", () => {
  const withNul = (nulBytes: "strip" | "reject") => {
    const spool = new Spool(join(root, `spool${n}`));
    return new BodyCollector(spool, `NUL${String(n++).padStart(13, "0")}`, 1 << 20, 1 << 20, { maxHeaderSize: 1024, maxHeaderSection: 4096, nulBytes });
  };

  test("strip: removed from header and body, across chunk edges, and noted", async () => {
    const c = withNul("strip");
    for (const part of ["Subj\0ect: x\r\n", "\r\n", "a\0\0b\r\n\0", ".\r\n"]) c.push(bytes(part));
    c.end();
    expect(c.nul).toBe(true);
    expect(c.refused).toBe(false);
    expect(c.headText()).toBe("Subject: x\r\n\r\n");
    expect(new TextDecoder().decode((await c.finish())!)).toBe("ab\r\n.\r\n");
  });

  test("a NUL between CR and LF leaves a clean CRLF once stripped", () => {
    const c = withNul("strip");
    c.push(bytes("Subject: x\r\0\n\r\nbody\r\n"));
    c.end();
    expect(c.bareNewline).toBe(false);
  });

  test("reject: noted, the message is refused and nothing more is kept", async () => {
    const c = withNul("reject");
    c.push(bytes("Subject: x\r\n\r\nbo\0dy\r\n"));
    c.push(bytes("more\r\n"));
    c.end();
    expect(c.nul).toBe(true);
    expect(c.refused).toBe(true);
  });

  test("content without NUL is passed through untouched (same bytes)", async () => {
    const c = withNul("strip");
    c.push(bytes("Subject: x\r\n\r\nplain\r\n"));
    c.end();
    expect(c.nul).toBe(false);
    expect(new TextDecoder().decode((await c.finish())!)).toBe("plain\r\n");
  });
});

describe("header section limits and its end", () => {
  const limited = () => new BodyCollector(new Spool(join(root, `spool${n}`)), `HDR${String(n++).padStart(13, "0")}`, 1 << 20, 1 << 22, { maxHeaderSize: 1000, maxHeaderSection: 4000, nulBytes: "strip" });

  test("a field over max_header_size (folded lines counted) is refused, even dripped a byte at a time", () => {
    for (const split of [false, true]) {
      const c = limited();
      const msg = `Subject: x\r\nX-Long: ${"a".repeat(600)}\r\n ${"b".repeat(600)}\r\n\r\nbody\r\n`;
      for (const part of split ? msg.split("") : [msg]) c.push(bytes(part));
      c.end();
      expect(c.headerTooLarge).toBe(true);
      expect(c.refused).toBe(true);
      expect(c.headText()).toBeNull();
    }
  });

  test("a header section over max_header_section is refused, though every field is small", () => {
    const c = limited();
    c.push(bytes(`X-A: ${"a".repeat(900)}\r\n`.repeat(5)));
    c.push(bytes("\r\nbody\r\n"));
    c.end();
    expect(c.headerTooLarge).toBe(true);
  });

  test("fields just under the limits pass", () => {
    const c = limited();
    c.push(bytes(`X-A: ${"a".repeat(990)}\r\n`.repeat(3) + "\r\nbody\r\n"));
    c.end();
    expect(c.headerTooLarge).toBe(false);
    expect(c.headText()).toEndWith("\r\n\r\n");
  });

  test("a line that is not a field ends the header section: the rest is body, however long", async () => {
    const c = limited();
    const body = `this is not a header\r\n${"x".repeat(70)}\r\n`.repeat(200);
    c.push(bytes(`Received: from a\r\nSubject: s\r\n${body}`));
    c.end();
    expect(c.headerTooLarge).toBe(false);
    expect(c.headText()).toBe("Received: from a\r\nSubject: s\r\n");
    expect(c.hops).toBe(1);
    expect(new TextDecoder().decode((await c.finish())!)).toBe(body);
  });

  test("white space before the colon is still a field (obs syntax); a leading space without a field is not", () => {
    const a = limited();
    a.push(bytes("Subject : x\r\n\tfolded\r\n\r\nb\r\n"));
    a.end();
    expect(a.headText()).toBe("Subject : x\r\n\tfolded\r\n\r\n");
    const b = limited();
    b.push(bytes(" leading\r\nSubject: x\r\n\r\n"));
    b.end();
    expect(b.headText()).toBe("");
  });
});

describe("write failures", () => {
  test("a spool write that fails is remembered, the partial file removed, and the message refused", async () => {
    const spool = new Spool(join(root, `spool${n}`));
    const broken = Object.create(spool) as Spool;
    broken.create = () => {
      throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    };
    const c = new BodyCollector(broken, `W${String(n++).padStart(13, "0")}`, 8, 1 << 20);
    c.push(bytes("Subject: x\r\n\r\n" + "y".repeat(100)));
    c.push(bytes("more\r\n"));
    c.end();
    expect(c.writeError?.message).toContain("ENOSPC");
    expect(c.refused).toBe(true);
    expect(readdirSync(spool.dir)).toEqual([]);
  });
});
