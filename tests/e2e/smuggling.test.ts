// SMTP smuggling: end-of-data look-alikes with bare LF or bare CR must not split a message
// into two, here or at the next hop. The whole message is refused and nothing is queued.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CANARY_SENDER, canaryThrough } from "../helpers/canary.ts";
import { queueCounts, Relay } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] } } });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

const smuggled = "MAIL FROM:<ceo@dest.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nFrom: ceo@dest.test\r\nSubject: smuggled\r\n\r\npay now\r\n";
const variants: Record<string, string> = {
  "<LF>.<LF>": `Subject: cover\r\n\r\nhello\n.\n${smuggled}`,
  "<LF>.<CR><LF>": `Subject: cover\r\n\r\nhello\n.\r\n${smuggled}`,
  "<CR><LF>.<LF>": `Subject: cover\r\n\r\nhello\r\n.\n${smuggled}`,
  "<CR>.<CR>": `Subject: cover\r\n\r\nhello\r.\r${smuggled}`,
  "bare LF in a header": "Subject: cover\nX-Evil: 1\r\n\r\nbody\r\n",
  "bare CR in the body": "Subject: cover\r\n\r\nbo\rdy\r\n",
};

describe("bare line endings in DATA", () => {
  for (const [name, body] of Object.entries(variants)) {
    test(`${name}: 550 5.5.2, nothing queued, no smuggled command runs`, async () => {
      const { talk } = await SmtpTalk.open(relay.port);
      await talk.send("EHLO attacker.test");
      const r = await talk.transaction("spoof@attacker.test", ["bob@dest.test"], body);
      expect(r.code).toBe(550);
      expect(r.text).toStartWith("5.5.2 ");
      // The session is in sync: the next command gets exactly its own reply.
      const noop = await talk.send("NOOP");
      expect(noop.code).toBe(250);
      talk.close();
      expect(queueCounts(relay.dir).messages).toBe(0);
    });
  }

  test("the next hop received nothing: a canary sent after the attempts arrives alone, and the queue is empty", async () => {
    await canaryThrough(relay, sink);
    expect(sink.messages.map((m) => m.from)).toEqual([CANARY_SENDER]);
  });

  test("a clean message with dot-stuffed lines still passes", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    const r = await talk.transaction("ok@origin.test", ["bob@dest.test"], "Subject: fine\r\n\r\n..\r\n...x\r\n");
    expect(r.code).toBe(250);
    talk.close();
  });
});
