// Lines over 998 octets never leave long (RFC 5321 4.5.3.1.6), whether the body is kept in the
// queue database or streamed from a spool file; and dot-stuffing is right both ways: lines
// that begin with "." and ".." arrive byte for byte, also where a wrapped line starts with one.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { afterTrace, transact } from "../helpers/esmtp.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  sink = await Sink.start({ hide: ["8BITMIME", "SMTPUTF8", "DSN", "PIPELINING"] });
  // Bodies over 4 KiB are spooled: both paths are taken below.
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } }, queue: { inline_max_size: "4KiB" } } });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
});

const arrived = (marker: string) => waitFor(() => sink.messages.find((m) => m.raw.toString("latin1").includes(marker)), 15_000, `"${marker}" at the sink`);
const unfold = (head: string) => head.replace(/\r\n(?=[ \t])/g, "");

async function relayed(marker: string, message: Buffer): Promise<string> {
  expect((await transact(relay.port, { mail: "MAIL FROM:<alice@example.org>", rcpts: ["RCPT TO:<bob@dest.test>"], message })).code).toBe(250);
  return afterTrace((await arrived(marker)).raw).toString("latin1");
}

describe("long lines", () => {
  const subject = "Subject: long-header " + Array.from({ length: 400 }, (_, i) => `w${i}`).join(" ");
  const token = `X-Token: ${"t".repeat(3000)}`;

  for (const [name, bodyLine] of [["inline body", "b".repeat(2500)], ["spooled body, a 2 MiB line", "s".repeat(2 * 1024 * 1024)]] as const) {
    test(`${name}: header lines folded, body lines broken, every line <= 998, nothing lost`, async () => {
      const marker = `marker-${name.length}`;
      const message = Buffer.from(`${subject}\r\n${token}\r\nX-Marker: ${marker}\r\n\r\nshort first\r\n${bodyLine}\r\nshort last\r\n`);
      const out = await relayed(marker, message);
      for (const line of out.split("\r\n")) expect(line.length).toBeLessThanOrEqual(998);
      const [head, body] = [out.slice(0, out.indexOf("\r\n\r\n") + 2), out.slice(out.indexOf("\r\n\r\n") + 4)];
      const fields = unfold(head).split("\r\n");
      // Folded at whitespace: unfolds to the very field. No whitespace: broken with CRLF SP.
      expect(fields[0]).toBe(subject);
      expect(fields[1]!.replace(/ /g, "")).toBe(token.replace(/ /g, ""));
      expect(fields[2]).toBe(`X-Marker: ${marker}`);
      // The body's breaks are plain CRLFs.
      expect(body.startsWith("short first\r\n")).toBe(true);
      expect(body.replace(/\r\n/g, "")).toBe(`short first${bodyLine}short last`);
      const pieces = body.split("\r\n").filter((l) => /^[bs]+$/.test(l));
      expect(pieces.slice(0, -1).every((l) => l.length === 998)).toBe(true);
    }, 30_000);
  }
});

describe("dot-stuffing", () => {
  const dotted = "X-Marker: dots\r\n\r\n.\r\n..\r\n...\r\n.leading\r\n..double\r\nend\r\n";

  test('lines beginning with "." and ".." arrive byte for byte (inline and spooled)', async () => {
    const small = Buffer.from(`Subject: dots-inline\r\n${dotted}`);
    expect(await relayed("dots-inline", small)).toBe(small.toString("latin1"));
    const big = Buffer.from(`Subject: dots-spooled\r\n${dotted}${".x\r\n".repeat(3000)}..\r\n`);
    expect(await relayed("dots-spooled", big)).toBe(big.toString("latin1"));
  });

  test('a wrapped line whose continuation starts with "." is stuffed too', async () => {
    const line = `${"a".repeat(998)}.hidden end of data? no\r\n`;
    const out = await relayed("dots-wrapped", Buffer.from(`Subject: dots-wrapped\r\n\r\n${line}.\r\nafter\r\n`));
    expect(out).toBe(`Subject: dots-wrapped\r\n\r\n${"a".repeat(998)}\r\n.hidden end of data? no\r\n.\r\nafter\r\n`);
  });

  test('received with BDAT, forwarded with DATA: "." and ".." lines byte for byte', async () => {
    const message = Buffer.from(`Subject: dots-bdat\r\n${dotted}`);
    const { talk } = await SmtpTalk.open(relay.port);
    try {
      expect((await talk.send("EHLO client.test")).lines.join(" ")).toContain("CHUNKING");
      expect((await talk.send("MAIL FROM:<alice@example.org>")).code).toBe(250);
      expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
      // BDAT carries the octets as they are: no dot-stuffing (RFC 3030 2).
      const half = 20;
      talk.write(Buffer.concat([Buffer.from(`BDAT ${half}\r\n`), message.subarray(0, half)]));
      expect((await talk.reply()).code).toBe(250);
      talk.write(Buffer.concat([Buffer.from(`BDAT ${message.length - half} LAST\r\n`), message.subarray(half)]));
      expect((await talk.reply()).code).toBe(250);
    } finally {
      talk.close();
    }
    expect(afterTrace((await arrived("dots-bdat")).raw).equals(message)).toBe(true);
  });
});
