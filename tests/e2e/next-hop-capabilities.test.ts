// What the relay sends depends on what the next hop offers. Two real next hops (smtp-server):
// "plain" offers none of 8BITMIME, SMTPUTF8, DSN, PIPELINING (and, like every smtp-server,
// no CHUNKING); "full" offers them all (CHUNKING aside). Mail from a client reaches both; the
// bytes and the MAIL/RCPT parameters each one received are compared.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { afterTrace, transact } from "../helpers/esmtp.ts";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink, type Received } from "../helpers/sink.ts";

let plain: Sink;
let full: Sink;
let origin: Sink;
let relay: Relay;

beforeAll(async () => {
  plain = await Sink.start({ hide: ["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN"] });
  full = await Sink.start();
  // Reports to senders arrive here.
  origin = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "plain.test": plain.route, "full.test": full.route, "origin.test": origin.route } },
      queue: { retry_schedule: ["1s"] },
    },
  });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([plain.close(), full.close(), origin.close()]);
});

const utf8 = (s: string) => Buffer.from(s, "utf8");
const arrived = (sink: Sink, marker: string) => waitFor(() => sink.messages.find((m) => m.raw.toString("latin1").includes(marker)), 10_000, `"${marker}" at the sink`);
const bounceAbout = (marker: string) => waitFor(() => origin.messages.find((m) => m.from === "" && m.raw.toString("latin1").includes(marker)), 10_000, `the report about "${marker}"`);

/** RFC 2045 6.7 decoding, written here independently of the relay's libraries. */
const qpDecode = (s: string) => Buffer.from(s.replace(/=\r\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), "latin1");

function eightBitMessage(marker: string): Buffer {
  return Buffer.concat([
    Buffer.from(`From: alice@origin.test\r\nSubject: ${marker}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="xx"\r\n\r\n`),
    Buffer.from("--xx\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"),
    utf8("Grüße aus Köln, = 100 %\r\nzweite Zeile\r\n"),
    Buffer.from("--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"),
    Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x41, 0x42]),
    Buffer.from("\r\n--xx\r\nContent-Type: text/plain\r\n\r\nascii part\r\n--xx--\r\n"),
  ]);
}

describe("8BITMIME", () => {
  test("to a hop that offers it: BODY=8BITMIME and the message byte for byte", async () => {
    const message = eightBitMessage("eight-bit-full");
    expect((await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test> BODY=8BITMIME", rcpts: ["RCPT TO:<bob@full.test>"], message })).code).toBe(250);
    const got = await arrived(full, "eight-bit-full");
    expect(got.mailParams.BODY).toBe("8BITMIME");
    expect(afterTrace(got.raw).equals(message)).toBe(true);
  });

  test("to a hop without it: no BODY=, the 8-bit parts quoted-printable or base64, decoded content equal, every line <= 998", async () => {
    const message = eightBitMessage("eight-bit-plain");
    expect((await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test> BODY=8BITMIME", rcpts: ["RCPT TO:<bob@plain.test>"], message })).code).toBe(250);
    const got = await arrived(plain, "eight-bit-plain");
    expect(got.mailParams.BODY).toBeUndefined();
    const text = afterTrace(got.raw).toString("latin1");
    expect(text).toMatch(/^[\x00-\x7f]*$/);
    for (const line of text.split("\r\n")) expect(line.length).toBeLessThanOrEqual(998);
    // The top header section is what the client sent.
    expect(text.slice(0, text.indexOf("\r\n\r\n") + 4)).toBe(message.toString("latin1").slice(0, message.indexOf("\r\n\r\n") + 4));
    const parts = text.split("\r\n--xx").slice(1, -1).map((p) => ({ head: p.slice(2, p.indexOf("\r\n\r\n") + 2), body: p.slice(p.indexOf("\r\n\r\n") + 4) }));
    expect(parts.map((p) => p.head)).toEqual([
      "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
      "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n",
      "Content-Type: text/plain\r\n",
    ]);
    expect(qpDecode(parts[0]!.body).toString("utf8")).toBe("Grüße aus Köln, = 100 %\r\nzweite Zeile");
    expect(Buffer.from(parts[1]!.body, "base64").equals(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x41, 0x42]))).toBe(true);
    expect(parts[2]!.body).toBe("ascii part");
  });

  test("a 7-bit message to the hop without 8BITMIME goes out byte for byte", async () => {
    const message = Buffer.from("From: alice@origin.test\r\nSubject: seven-bit-plain\r\n\r\nplain text, nothing to convert\r\n");
    expect((await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test>", rcpts: ["RCPT TO:<bob@plain.test>"], message })).code).toBe(250);
    expect(afterTrace((await arrived(plain, "seven-bit-plain")).raw).equals(message)).toBe(true);
  });
});

describe("SMTPUTF8", () => {
  test("a UTF-8 sender goes to a hop that offers SMTPUTF8 with SMTPUTF8, the address intact", async () => {
    const message = Buffer.concat([utf8("From: jürgen@origin.test\r\nSubject: utf8-full Grüße\r\n\r\nHallo\r\n")]);
    expect((await transact(relay.port, { mail: "MAIL FROM:<jürgen@origin.test> SMTPUTF8 BODY=8BITMIME", rcpts: ["RCPT TO:<bob@full.test>"], message })).code).toBe(250);
    const got = await arrived(full, "utf8-full");
    expect(got.from).toBe("jürgen@origin.test");
    expect(got.mailParams.SMTPUTF8).toBe(true);
    expect(afterTrace(got.raw).equals(message)).toBe(true);
  });

  test("to a hop that does not offer it: bounced with 5.6.7, the sender told", async () => {
    const message = utf8("From: jürgen@origin.test\r\nSubject: utf8-plain\r\n\r\nHallo\r\n");
    expect((await transact(relay.port, { mail: "MAIL FROM:<jürgen@origin.test> SMTPUTF8", rcpts: ["RCPT TO:<bob@plain.test>"], message })).code).toBe(250);
    const dsn = (await bounceAbout("utf8-plain")).raw.toString("latin1");
    expect(dsn).toContain("Final-Recipient: rfc822; bob@plain.test\r\nAction: failed\r\nStatus: 5.6.7\r\n");
    expect(dsn).toMatch(/Diagnostic-Code: x-mailraven; 5\.6\.7 SMTPUTF8 is required, but was not offered by host smtp:\/\/127\.0\.0\.1:\d+/);
    expect(plain.messages.find((m) => m.raw.toString("latin1").includes("utf8-plain"))).toBeUndefined();
  });

  test("UTF-8 header fields alone need it too (ASCII addresses, SMTPUTF8 given): 5.6.7 to the plain hop, SMTPUTF8 to the full one", async () => {
    const message = utf8("From: Jürgen <juergen@origin.test>\r\nSubject: utf8-headers Grüße\r\n\r\nHallo\r\n");
    expect((await transact(relay.port, { mail: "MAIL FROM:<juergen@origin.test> SMTPUTF8", rcpts: ["RCPT TO:<bob@plain.test>", "RCPT TO:<carol@full.test>"], message })).code).toBe(250);
    const got = await arrived(full, "utf8-headers");
    expect(got.mailParams.SMTPUTF8).toBe(true);
    const dsn = (await bounceAbout("utf8-headers")).raw.toString("latin1");
    expect(dsn).toContain("Final-Recipient: rfc822; bob@plain.test\r\nAction: failed\r\nStatus: 5.6.7\r\n");
    expect(dsn).not.toContain("carol@full.test");
  });

  test("SMTPUTF8 asked for but nothing non-ASCII: delivered to the plain hop, without the parameter", async () => {
    const message = Buffer.from("From: juergen@origin.test\r\nSubject: utf8-not-needed\r\n\r\nHallo\r\n");
    expect((await transact(relay.port, { mail: "MAIL FROM:<juergen@origin.test> SMTPUTF8", rcpts: ["RCPT TO:<bob@plain.test>"], message })).code).toBe(250);
    const got = await arrived(plain, "utf8-not-needed");
    expect(got.mailParams.SMTPUTF8).toBeUndefined();
    expect(afterTrace(got.raw).equals(message)).toBe(true);
  });
});

describe("DSN parameters", () => {
  const message = (marker: string) => Buffer.from(`From: alice@origin.test\r\nSubject: ${marker}\r\n\r\nbody\r\n`);

  test("a hop that offers DSN gets RET and ENVID, and each recipient its own NOTIFY and ORCPT", async () => {
    expect(
      (
        await transact(relay.port, {
          mail: "MAIL FROM:<alice@origin.test> RET=HDRS ENVID=QQ+2B314159",
          rcpts: ["RCPT TO:<bob@full.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Bx@full.test", "RCPT TO:<carol@full.test> NOTIFY=NEVER", "RCPT TO:<dave@full.test>"],
          message: message("dsn-full"),
        })
      ).code,
    ).toBe(250);
    const got: Received = await arrived(full, "dsn-full");
    expect(got.to).toEqual(["bob@full.test", "carol@full.test", "dave@full.test"]);
    // smtp-server hands over the values xtext-decoded: what the client meant, passed on intact.
    expect(got.mailParams).toMatchObject({ RET: "HDRS", ENVID: "QQ+314159" });
    expect(got.rcptParams).toEqual({
      "bob@full.test": { NOTIFY: "SUCCESS,DELAY", ORCPT: "rfc822;bob+x@full.test" },
      "carol@full.test": { NOTIFY: "NEVER" },
      "dave@full.test": {},
    });
    // The next hop took over the notifications: no report from the relay.
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(origin.messages.find((m) => m.raw.toString("latin1").includes("dsn-full"))).toBeUndefined();
  });

  test("a hop without DSN gets none of them", async () => {
    expect(
      (
        await transact(relay.port, {
          mail: "MAIL FROM:<alice@origin.test> RET=FULL ENVID=abc",
          rcpts: ["RCPT TO:<bob@plain.test> NOTIFY=FAILURE ORCPT=rfc822;bob@plain.test"],
          message: message("dsn-plain"),
        })
      ).code,
    ).toBe(250);
    const got = await arrived(plain, "dsn-plain");
    expect(got.mailParams).toEqual({});
    expect(got.rcptParams).toEqual({ "bob@plain.test": {} });
  });
});
