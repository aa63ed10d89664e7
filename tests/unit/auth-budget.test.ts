// The pieces of sender authentication's budget (src/checks/content/auth-budget.ts): what mailauth
// reads (our header, then the client's body, wherever the chunks split), and the per-message
// resolver (each name once, lookups started together, all of them stopped at the deadline).

import { describe, expect, test } from "bun:test";
import { Readable } from "node:stream";
import { messageResolver, pacedMessage, Pacer } from "../../src/checks/content/auth-budget.ts";

async function read(stream: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts).toString("latin1");
}

/** `text` as a stream cut into pieces of `size` bytes. */
const chunks = (text: string, size: number) => Readable.from(Array.from({ length: Math.ceil(text.length / size) }, (_, i) => Buffer.from(text.slice(i * size, (i + 1) * size), "latin1")));

describe("pacedMessage", () => {
  const original = "DKIM-Signature: a\r\n b\r\nFrom: x@y.test\r\nX-Junk: 1\r\n\r\nline one\r\n\r\nline three\r\n";
  const body = "line one\r\n\r\nline three\r\n";

  test.each([1, 2, 3, 5, 13, 1000])("the client's header section is replaced by ours, in chunks of %i bytes", async (size) => {
    const out = await read(pacedMessage("From: x@y.test\r\n\r\n", chunks(original, size), new Pacer(), new AbortController().signal));
    expect(out).toBe(`From: x@y.test\r\n\r\n${body}`);
  });

  test("an empty header section; a message without a body", async () => {
    expect(await read(pacedMessage("\r\n", chunks("\r\nonly body\r\n", 4), new Pacer(), new AbortController().signal))).toBe("\r\nonly body\r\n");
    expect(await read(pacedMessage("From: a@b\r\n\r\n", chunks("From: a@b\r\n", 4), new Pacer(), new AbortController().signal))).toBe("From: a@b\r\n\r\n");
  });

  test("a 1 MiB body comes in slices of at most 16 KiB; an abort stops the stream", async () => {
    const big = `From: a@b\r\n\r\n${"x".repeat(1024 * 1024)}`;
    const sizes: number[] = [];
    for await (const c of pacedMessage("From: a@b\r\n\r\n", chunks(big, 300_000), new Pacer(), new AbortController().signal)) sizes.push((c as Buffer).length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(16 * 1024);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(big.length);
    const stop = new AbortController();
    const stream = pacedMessage("From: a@b\r\n\r\n", chunks(big, 300_000), new Pacer(), stop.signal);
    stop.abort();
    await expect(read(stream)).rejects.toThrow("deadline");
  });
});

describe("messageResolver", () => {
  test("each name is asked once, prefetched lookups included; names compare without case and trailing dot", async () => {
    const asked: string[] = [];
    const base = async (name: string, type: string) => (asked.push(`${type} ${name}`), [[`v=DKIM1; ${name}`]]);
    const r = messageResolver(base, new AbortController().signal);
    r.prefetch(["s1._domainkey.a.test", "s2._domainkey.a.test"], "TXT");
    expect(asked).toEqual(["TXT s1._domainkey.a.test", "TXT s2._domainkey.a.test"]);
    expect(await r.lookup("S1._domainkey.A.test.", "txt")).toEqual([["v=DKIM1; s1._domainkey.a.test"]]);
    expect(asked).toHaveLength(2);
  });

  test("at the deadline every pending and later lookup fails with ETIMEOUT", async () => {
    const stop = new AbortController();
    const r = messageResolver(() => new Promise(() => {}), stop.signal);
    const pending = r.lookup("never.test", "TXT");
    stop.abort();
    await expect(pending).rejects.toMatchObject({ code: "ETIMEOUT" });
    await expect(r.lookup("later.test", "TXT")).rejects.toMatchObject({ code: "ETIMEOUT" });
  });

  test("at most 100 lookups per message", async () => {
    const r = messageResolver(async () => [], new AbortController().signal);
    for (let i = 0; i < 100; i++) await r.lookup(`n${i}.test`, "A");
    await expect(r.lookup("n100.test", "A")).rejects.toMatchObject({ code: "ESERVFAIL" });
  });
});
