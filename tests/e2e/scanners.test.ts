// The optional content scanners against the real daemons (Debian's spamd and clamd on loopback):
// verdicts and headers from real scores and real signature matches, and failing open, reported,
// when a daemon is down, hangs, or refuses a message over its stream limit.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createReadStream, writeFileSync } from "node:fs";
import { join } from "node:path";
import { clamdPing, virusCheck } from "../../src/checks/content/clamd.ts";
import { spamCheck, spamdPing } from "../../src/checks/content/spamd.ts";
import type { ScannerTarget } from "../../src/checks/content/daemon.ts";
import { ClamdServer, contentContext, EICAR, freeTcpPort, GTUBE, plainMessage, SilentServer, SpamdServer, withAttachment } from "../helpers/scanners.ts";

let spamd: SpamdServer;
let clamd: ClamdServer;
let silent: SilentServer;
let closed: ScannerTarget;

beforeAll(async () => {
  const started = await Promise.allSettled([SpamdServer.start(), ClamdServer.start({ streamMaxLength: "26M" }), SilentServer.start()]);
  const [s, c, q] = started;
  if (s.status === "rejected" || c.status === "rejected" || q.status === "rejected") {
    // Stop whatever did start, so one daemon that fails does not leave the others running.
    await Promise.all(started.map((r) => (r.status === "fulfilled" ? r.value.stop() : undefined)));
    throw started.find((r) => r.status === "rejected")!.reason;
  }
  [spamd, clamd, silent] = [s.value, c.value, q.value];
  closed = { host: "127.0.0.1", port: await freeTcpPort() };
  console.log(`spamd answered PING after ${Math.round(spamd.startMs)} ms, clamd after ${Math.round(clamd.startMs)} ms`);
}, 60_000);
afterAll(async () => {
  await Promise.all([spamd?.stop(), clamd?.stop(), silent?.stop()]);
}, 60_000);

/** An onError that records what it was told. */
function errors(): { onError: (err: Error) => void; seen: Error[] } {
  const seen: Error[] = [];
  return { onError: (err) => void seen.push(err), seen };
}

const ham = plainMessage("Hi Bob,\r\n\r\nShall we have lunch tomorrow at noon? The usual place.\r\n\r\nAlice");
const gtube = plainMessage(`This is the GTUBE test line:\r\n\r\n${GTUBE}\r\n`, "GTUBE test");

describe("spamd", () => {
  test("answers PING over TCP and the unix socket", async () => {
    expect(await spamdPing(spamd.tcp, 5000)).toBe(true);
    expect(await spamdPing(spamd.unix, 5000)).toBe(true);
  });

  test("GTUBE is refused: 550 5.7.1", async () => {
    const e = errors();
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 20_000, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(gtube));
    expect(r.verdict).toEqual({ kind: "reject", code: 550, status: "5.7.1", text: "Message rejected as spam", reason: "spam" });
    expect(r.add).toBeUndefined();
    expect(e.seen).toEqual([]);
  });

  test("an ordinary message is accepted with X-Spam-Status: No", async () => {
    const e = errors();
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 20_000, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(ham));
    expect(r.verdict).toEqual({ kind: "accept" });
    expect(r.add).toHaveLength(1);
    expect(r.add![0]).toMatch(/^X-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=[A-Z0-9_,]+$/);
    expect(e.seen).toEqual([]);
  });

  test("at or over tag_score (and under reject_score) the message is marked X-Spam-Flag: YES", async () => {
    const e = errors();
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 20_000, rejectScore: 5000, tagScore: 5, onError: e.onError })(contentContext(gtube));
    expect(r.verdict).toEqual({ kind: "accept" });
    expect(r.add).toHaveLength(3);
    expect(r.add![0]).toBe("X-Spam-Flag: YES");
    expect(r.add![1]).toMatch(/^X-Spam-Score: 10\d\d\.\d$/);
    expect(r.add![2]).toMatch(/^X-Spam-Status: Yes, score=10\d\d\.\d required=5\.0 tests=([A-Z0-9_]+,)*GTUBE(,[A-Z0-9_]+)*$/);
    expect(e.seen).toEqual([]);
  });

  test("a low tag_score marks an ordinary message too", async () => {
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 20_000, rejectScore: 10, tagScore: -100, onError: () => {} })(contentContext(ham));
    expect(r.verdict.kind).toBe("accept");
    expect(r.add![0]).toBe("X-Spam-Flag: YES");
    expect(r.add![2]).toStartWith("X-Spam-Status: Yes, ");
  });

  test("works over the unix socket", async () => {
    const r = await spamCheck({ target: spamd.unix, timeoutMs: 20_000, rejectScore: 10, tagScore: 5, onError: () => {} })(contentContext(gtube));
    expect(r.verdict.kind).toBe("reject");
  });

  test("spamd down (closed port): accepted without headers, onError told", async () => {
    const e = errors();
    const r = await spamCheck({ target: closed, timeoutMs: 5000, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(gtube));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(e.seen).toHaveLength(1);
    expect(e.seen[0]!.message).toContain(`spamd at 127.0.0.1:${(closed as { port: number }).port}`);
    expect(e.seen[0]!.message).toContain("ECONNREFUSED");
  });

  test("a unix socket path that does not exist: fail open, onError told", async () => {
    const e = errors();
    const r = await spamCheck({ target: { path: `${spamd.dir}/nope.sock` }, timeoutMs: 5000, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(gtube));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(e.seen).toHaveLength(1);
  });

  test("a daemon that never answers: fail open after the timeout", async () => {
    const e = errors();
    const t0 = performance.now();
    const r = await spamCheck({ target: { host: "127.0.0.1", port: silent.port }, timeoutMs: 700, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(gtube));
    const elapsed = performance.now() - t0;
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(elapsed).toBeGreaterThanOrEqual(650);
    expect(elapsed).toBeLessThan(3000);
    expect(e.seen).toHaveLength(1);
    expect(e.seen[0]!.message).toContain("no complete answer within 700 ms");
  });

  test("a message whose stream is shorter than its size: fail open at once, spamd not left waiting", async () => {
    const e = errors();
    const t0 = performance.now();
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 20_000, rejectScore: 10, tagScore: 5, onError: e.onError })(
      contentContext(gtube, { size: gtube.length + 10 }),
    );
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(e.seen[0]!.message).toContain("not the");
  });

  test("a message over maxSize is passed unscanned, spamd not asked", async () => {
    const e = errors();
    const big = plainMessage(`${GTUBE}\r\n${"x".repeat(1000)}\r\n`.repeat(600));
    const r = await spamCheck({ target: closed, timeoutMs: 5000, rejectScore: 10, tagScore: 5, onError: e.onError })(contentContext(big));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(e.seen).toEqual([]);
  });

  test("a message a little under maxSize is scanned, streamed in pieces", async () => {
    // SpamAssassin 4 scans the first 50 kB of each body part (body_part_scan_size): GTUBE goes first.
    const body = `${GTUBE}\r\n${"Some ordinary text for a long letter, line after line.\r\n".repeat(8000)}`;
    const msg = plainMessage(body);
    const r = await spamCheck({ target: spamd.tcp, timeoutMs: 30_000, rejectScore: 10, tagScore: 5, maxSize: msg.length, onError: () => {} })(contentContext(msg));
    expect(r.verdict.kind).toBe("reject");
  });
});

describe("clamd", () => {
  const eicarMail = withAttachment("See the attached file.", "eicar.com", Buffer.from(EICAR, "latin1"));

  test("answers PING over TCP and the unix socket", async () => {
    expect(await clamdPing(clamd.tcp, 5000)).toBe(true);
    expect(await clamdPing(clamd.unix, 5000)).toBe(true);
  });

  test("EICAR in an attachment is refused: 554 5.7.1 naming the signature", async () => {
    const e = errors();
    const r = await virusCheck({ target: clamd.tcp, timeoutMs: 20_000, onError: e.onError })(contentContext(eicarMail));
    expect(r.verdict).toMatchObject({ kind: "reject", code: 554, status: "5.7.1", reason: "virus" });
    expect(r.verdict.kind === "reject" && r.verdict.text).toMatch(/^Message rejected: virus found \(Eicar-Test-Signature(\.UNOFFICIAL)?\)$/);
    expect(e.seen).toEqual([]);
  });

  test("EICAR as plain text in the body is refused too, over the unix socket", async () => {
    const r = await virusCheck({ target: clamd.unix, timeoutMs: 20_000, onError: () => {} })(contentContext(plainMessage(EICAR)));
    expect(r.verdict).toMatchObject({ kind: "reject", code: 554 });
  });

  test("a clean message is accepted, no header added", async () => {
    const e = errors();
    const r = await virusCheck({ target: clamd.tcp, timeoutMs: 20_000, onError: e.onError })(contentContext(withAttachment("Report attached.", "report.txt", Buffer.from("quarterly numbers\r\n"))));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(e.seen).toEqual([]);
  });

  test("a 25 MiB message read from a file (like a spooled body) is streamed whole and scanned", async () => {
    const e = errors();
    const path = join(clamd.dir, "spooled.eml");
    // EICAR at the very end: found only if every byte reached clamd.
    const msg = Buffer.concat([Buffer.from(plainMessage("")), Buffer.alloc(25 * 1024 * 1024 - 200, "A"), Buffer.from(`\r\n${EICAR}\r\n`)]);
    writeFileSync(path, msg);
    const ctx = contentContext("", { message: () => createReadStream(path), size: msg.length });
    const r = await virusCheck({ target: clamd.tcp, timeoutMs: 30_000, onError: e.onError })(ctx);
    expect(e.seen).toEqual([]);
    expect(r.verdict).toMatchObject({ kind: "reject", code: 554 });
  });

  test("a 2 MiB attachment in a message held in memory as one chunk is scanned", async () => {
    const r = await virusCheck({ target: clamd.tcp, timeoutMs: 20_000, onError: () => {} })(
      contentContext(withAttachment("big", "big.bin", Buffer.concat([Buffer.alloc(2 * 1024 * 1024, "A"), Buffer.from(EICAR)]))),
    );
    expect(r.verdict).toMatchObject({ kind: "reject", code: 554 });
  });

  test("a message over clamd's StreamMaxLength (26M): fail open, onError told, no hang", async () => {
    for (const target of [clamd.tcp, clamd.unix]) {
      const e = errors();
      const t0 = performance.now();
      const r = await virusCheck({ target, timeoutMs: 20_000, onError: e.onError })(contentContext(Buffer.alloc(28 * 1024 * 1024, "B")));
      expect(r).toEqual({ verdict: { kind: "accept" } });
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(e.seen).toHaveLength(1);
      // clamd answers "INSTREAM size limit exceeded" and closes with our data still unread, so
      // its kernel resets the connection: whether that reply is read before our next write
      // fails with EPIPE (or the read with ECONNRESET) is a race in TCP itself, not in the relay.
      expect(e.seen[0]!.message).toMatch(/^clamd at .*: (.*INSTREAM size limit exceeded|write EPIPE|.*ECONNRESET)/);
    }
  });

  test("clamd down (closed port): fail open, onError told", async () => {
    const e = errors();
    const r = await virusCheck({ target: closed, timeoutMs: 5000, onError: e.onError })(contentContext(eicarMail));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(e.seen).toHaveLength(1);
    expect(e.seen[0]!.message).toContain("ECONNREFUSED");
  });

  test("a daemon that never answers: fail open after the timeout", async () => {
    const e = errors();
    const t0 = performance.now();
    const r = await virusCheck({ target: { host: "127.0.0.1", port: silent.port }, timeoutMs: 700, onError: e.onError })(contentContext(eicarMail));
    const elapsed = performance.now() - t0;
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(elapsed).toBeGreaterThanOrEqual(650);
    expect(elapsed).toBeLessThan(3000);
    expect(e.seen[0]!.message).toContain("no complete answer within 700 ms");
  });

  test("a daemon that never reads a large message: the timeout still ends the blocked send", async () => {
    const e = errors();
    const t0 = performance.now();
    const r = await virusCheck({ target: { host: "127.0.0.1", port: silent.port }, timeoutMs: 700, onError: e.onError })(contentContext(Buffer.alloc(20 * 1024 * 1024, "C")));
    expect(r).toEqual({ verdict: { kind: "accept" } });
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(e.seen).toHaveLength(1);
  });
});
