// CHUNKING (RFC 3030): BDAT chunks are read by byte count with no dot-stuffing, checked like
// DATA (size, bare CR/LF, NUL, header limits, hops), and the message exists only once
// BDAT ... LAST is in. Forwarded with DATA: the sink (which unstuffs what the relay stuffed)
// must get the client's bytes exactly, behind our Received: header.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] },
      smtp: { max_message_size: "64KiB", max_hops: 5, max_header_size: "2KiB", max_header_section: "8KiB" },
      defenses: { connection_rate: 0 },
    },
  });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

async function mailRcpt(): Promise<SmtpTalk> {
  const { talk } = await SmtpTalk.open(relay.port);
  const ehlo = await talk.send("EHLO client.test");
  expect(ehlo.lines.map((l) => l.slice(4))).toContain("CHUNKING");
  expect((await talk.send("MAIL FROM:<chunks@origin.test>")).code).toBe(250);
  expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
  return talk;
}

const bdat = (chunk: Buffer | string, last = false) => {
  const b = typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk;
  return Buffer.concat([Buffer.from(`BDAT ${b.length}${last ? " LAST" : ""}\r\n`), b]);
};

/** The message the sink got, without the Received: header the relay put on top. */
async function delivered(tag: string): Promise<Buffer> {
  const got = await waitFor(() => sink.messages.find((m) => m.raw.includes(tag)), 10_000, `delivery of ${tag}`);
  const text = got.raw.toString("latin1");
  expect(text).toStartWith("Received: ");
  const end = text.search(/\r\n(?![ \t])/) + 2; // the end of our (folded) trace header
  return got.raw.subarray(end);
}

describe("a message in chunks", () => {
  test("dot-leading lines and a lone dot, split anywhere, reach the sink byte for byte", async () => {
    // "\r\n.\r\n" would end DATA; in a chunk it is content, and the relay must dot-stuff it on.
    const message = Buffer.from("Subject: chunks-dots\r\n\r\n.\r\n..\r\n.leading\r\n..two\r\nend.\r\n.\r\n", "latin1");
    const t = await mailRcpt();
    t.write(bdat(message.subarray(0, 25)));
    const r1 = await t.reply();
    expect(r1.code).toBe(250);
    expect(r1.text).toBe("2.0.0 Ok: 25 octets received");
    t.write(bdat(message.subarray(25, 31)));
    expect((await t.reply()).code).toBe(250);
    t.write(bdat(message.subarray(31), true));
    const last = await t.reply();
    expect(last.code).toBe(250);
    expect(last.text).toMatch(/^2\.0\.0 Ok: queued as \S+$/);
    t.close();
    expect((await delivered("chunks-dots")).toString("latin1")).toBe(message.toString("latin1"));
  });

  test("a message that does not end in CRLF gets one on the way out, as DATA requires (RFC 5321 4.1.1.4)", async () => {
    const t = await mailRcpt();
    t.write(bdat("Subject: chunks-no-crlf\r\n\r\nlast line.", true));
    expect((await t.reply()).code).toBe(250);
    t.close();
    expect((await delivered("chunks-no-crlf")).toString("latin1")).toBe("Subject: chunks-no-crlf\r\n\r\nlast line.\r\n");
  });

  test("all chunks pipelined in one write, then BDAT 0 LAST: replies in order, one message", async () => {
    const t = await mailRcpt();
    const body = "Subject: chunks-pipelined\r\n\r\nline one\r\nline two\r\n";
    t.write(Buffer.concat([bdat(body.slice(0, 10)), bdat(body.slice(10)), Buffer.from("BDAT 0 LAST\r\n")]));
    expect((await t.reply()).code).toBe(250);
    expect((await t.reply()).code).toBe(250);
    expect((await t.reply()).text).toMatch(/^2\.0\.0 Ok: queued as /);
    // The session goes on: a second message by DATA.
    expect((await t.transaction("after@origin.test", ["bob@dest.test"], "Subject: data-after-bdat\r\n\r\nok\r\n")).code).toBe(250);
    t.close();
    expect((await delivered("chunks-pipelined")).toString("latin1")).toBe(body);
  });

  test("NUL octets are stripped, as from DATA", async () => {
    const t = await mailRcpt();
    t.write(bdat("Subject: chunks-nul\r\n\r\nab\0cd\r\n", true));
    expect((await t.reply()).code).toBe(250);
    t.close();
    expect((await delivered("chunks-nul")).toString("latin1")).toBe("Subject: chunks-nul\r\n\r\nabcd\r\n");
  });
});

describe("refusals", () => {
  test("BDAT without MAIL or without RCPT: 503 5.5.1 after its octets are read, so the session stays in sync", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    talk.write(bdat("MAIL FROM:<x@y.test>\r\n"));
    const r = await talk.reply();
    expect(r.code).toBe(503);
    expect(r.text).toBe("5.5.1 Error: need MAIL command");
    expect((await talk.send("MAIL FROM:<a@origin.test>")).code).toBe(250);
    talk.write(bdat("RCPT TO:<x@y.test>\r\n", true));
    const r2 = await talk.reply();
    expect(r2.code).toBe(503);
    expect(r2.text).toBe("5.5.1 Error: need RCPT command");
    expect((await talk.send("NOOP")).code).toBe(250);
    talk.close();
  });

  test("DATA and RCPT in the middle of a BDAT transaction: 503 5.5.1; nothing queued", async () => {
    const before = relay.count("message accepted");
    const t = await mailRcpt();
    t.write(bdat("Subject: half\r\n"));
    expect((await t.reply()).code).toBe(250);
    const rcpt = await t.send("RCPT TO:<carol@dest.test>");
    expect(rcpt.code).toBe(503);
    expect(rcpt.text).toBe("5.5.1 Error: RCPT after BDAT");
    const data = await t.send("DATA");
    expect(data.code).toBe(503);
    expect(data.text).toBe("5.5.1 Error: DATA after BDAT");
    // RSET ends the transaction: the next chunk has no MAIL.
    expect((await t.send("RSET")).code).toBe(250);
    t.write(bdat("rest\r\n", true));
    expect((await t.reply()).code).toBe(503);
    t.close();
    expect(relay.count("message accepted")).toBe(before);
  });

  for (const bad of ["BDAT", "BDAT abc", "BDAT 10 FIRST", "BDAT -1", "BDAT 1234567890123456"]) {
    test(`${bad}: 501 5.5.4, and what follows is not read as commands`, async () => {
      const t = await mailRcpt();
      t.write(`${bad}\r\n`);
      const r = await t.reply();
      expect(r.code).toBe(501);
      expect(r.text).toBe("5.5.4 Syntax: BDAT count [LAST]");
      // The chunk's length is unknown: the next line is taken for content, never a command.
      t.write("MAIL FROM:<ceo@dest.test>\r\n");
      const sync = await t.reply();
      expect(sync.code).toBe(554);
      expect(sync.text).toBe("5.5.0 Error: SMTP protocol synchronization");
      await t.closed;
    });
  }

  test("one chunk over the size limit: 552 5.3.4 once its octets are read and dropped; the session goes on", async () => {
    const t = await mailRcpt();
    const big = Buffer.alloc(200 * 1024, 0x78);
    t.write(Buffer.concat([Buffer.from(`BDAT ${big.length} LAST\r\n`), big]));
    const r = await t.reply();
    expect(r.code).toBe(552);
    expect(r.text).toStartWith("5.3.4 ");
    expect((await t.send("NOOP")).code).toBe(250);
    t.close();
  });

  test("chunks that together go over the limit: the chunk that crosses it gets 552 5.3.4, later ones 503", async () => {
    const t = await mailRcpt();
    const part = Buffer.alloc(40 * 1024, 0x79);
    t.write(Buffer.concat([bdat(Buffer.concat([Buffer.from("Subject: too big\r\n\r\n"), part])), bdat(part), bdat(part, true)]));
    expect((await t.reply()).code).toBe(250);
    const over = await t.reply();
    expect(over.code).toBe(552);
    expect(over.text).toStartWith("5.3.4 ");
    expect((await t.reply()).code).toBe(503);
    t.close();
  });

  test("bare LF inside a chunk (SMTP smuggling): 550 5.5.2, nothing queued", async () => {
    const t = await mailRcpt();
    t.write(bdat("Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<ceo@dest.test>\r\n", true));
    const r = await t.reply();
    expect(r.code).toBe(550);
    expect(r.text).toStartWith("5.5.2 ");
    t.close();
  });

  test("too many Received: headers: 554 5.4.6, as by DATA", async () => {
    const t = await mailRcpt();
    t.write(bdat(`${"Received: from x by y\r\n".repeat(6)}Subject: loop\r\n\r\nx\r\n`, true));
    const r = await t.reply();
    expect(r.code).toBe(554);
    expect(r.text).toStartWith("5.4.6 ");
    t.close();
  });

  test("a header field over smtp.max_header_size: 552 5.3.4, as by DATA", async () => {
    for (const send of ["bdat", "data"]) {
      const t = await mailRcpt();
      const message = `Subject: header\r\nX-Big: ${"h".repeat(3000)}\r\n\r\nx\r\n`;
      let r;
      if (send === "bdat") {
        t.write(bdat(message, true));
        r = await t.reply();
      } else {
        expect((await t.send("DATA")).code).toBe(354);
        t.write(`${message}.\r\n`);
        r = await t.reply();
      }
      expect(r.code).toBe(552);
      expect(r.text).toBe("5.3.4 Message header exceeds fixed limit (2048 bytes per field, 8192 bytes in all)");
      t.close();
    }
  });

  test("nothing refused was queued or delivered", async () => {
    await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "an empty queue");
    for (const tag of ["smuggle", "too big", "half", "loop", "header"]) expect(sink.messages.some((m) => m.raw.toString("latin1").includes(`Subject: ${tag}`))).toBe(false);
  });
});
