// Content a next hop can take, inbound part: NUL octets stripped (smtp.nul_bytes: strip, the
// default, like Postfix's message_strip_characters) or refused (reject); header sections over
// their limits refused with 552 5.3.4 rather than stored as body; and the header section ends
// at the first line that is not a header field, so the hop count still sees it.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;
let strict: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  const relayConfig = { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] };
  relay = await Relay.start({ config: { relay: relayConfig, smtp: { max_hops: 5, max_header_size: "4KiB", max_header_section: "16KiB" } } });
  strict = await Relay.start({ config: { relay: relayConfig, smtp: { nul_bytes: "reject" } } });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, strict]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

async function send(r: Relay, content: string | Buffer): Promise<{ code: number; text: string }> {
  const { talk } = await SmtpTalk.open(r.port);
  await talk.send("EHLO client.test");
  expect((await talk.send("MAIL FROM:<content@origin.test>")).code).toBe(250);
  expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
  expect((await talk.send("DATA")).code).toBe(354);
  talk.write(content);
  talk.write(".\r\n");
  const reply = await talk.reply();
  talk.close();
  return reply;
}

const receivedBy = async (tag: string) => (await waitFor(() => sink.messages.find((m) => m.raw.toString("latin1").includes(tag)), 10_000, tag)).raw.toString("latin1");

describe("NUL octets", () => {
  test("stripped by default, from headers and body; the rest arrives unchanged", async () => {
    const r = await send(relay, Buffer.from("Subject: nul-strip\0\r\n\r\nbefore\0.after\r\n\0.\r\nend\r\n", "latin1"));
    expect(r.code).toBe(250);
    const got = await receivedBy("nul-strip");
    expect(got).not.toContain("\0");
    expect(got).toEndWith("\r\nSubject: nul-strip\r\n\r\nbefore.after\r\n.\r\nend\r\n");
  });

  test("smtp.nul_bytes: reject -> 550 5.6.0, nothing queued", async () => {
    const r = await send(strict, Buffer.from("Subject: nul-reject\r\n\r\nbad\0byte\r\n", "latin1"));
    expect(r.code).toBe(550);
    expect(r.text).toBe("5.6.0 Message contains NUL characters, which SMTP does not allow");
    expect(queueCounts(strict.dir).messages).toBe(0);
    await strict.waitForLog((l) => l.msg === "data refused" && l.reason === "nul octets");
  });
});

describe("header limits", () => {
  test("one field over max_header_size (folded lines count): 552 5.3.4", async () => {
    const r = await send(relay, `Subject: big field\r\nX-Long: ${"a".repeat(3000)}\r\n ${"b".repeat(3000)}\r\n\r\nbody\r\n`);
    expect(r.code).toBe(552);
    expect(r.text).toBe("5.3.4 Message header exceeds fixed limit (4096 bytes per field, 16384 bytes in all)");
  });

  test("a header section over max_header_section, every field small: 552 5.3.4", async () => {
    const r = await send(relay, `${"X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(400)}Subject: big section\r\n\r\nbody\r\n`);
    expect(r.code).toBe(552);
    expect(r.text).toStartWith("5.3.4 Message header exceeds fixed limit");
  });

  test("the first line that is not a header field ends the section: a long body without a blank line passes", async () => {
    const body = `${"this line is body, not a header\r\n".repeat(1000)}`;
    const r = await send(relay, `Subject: no blank line\r\n${body}`);
    expect(r.code).toBe(250);
    const got = await receivedBy("Subject: no blank line");
    expect(got).toEndWith(`\r\nSubject: no blank line\r\n${body}`);
  });

  test("...and the hop count still counts the Received: lines above it", async () => {
    const r = await send(relay, `${"Received: from a by b\r\n".repeat(6)}looping body without a blank line\r\n`);
    expect(r.code).toBe(554);
    expect(r.text).toStartWith("5.4.6 Too many hops (6 Received: headers)");
  });

  test("nothing refused was queued", async () => {
    await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "an empty queue");
    for (const tag of ["big field", "big section", "nul-reject"]) expect(sink.messages.some((m) => m.raw.toString("latin1").includes(tag))).toBe(false);
  });
});
