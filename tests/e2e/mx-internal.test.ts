// MX delivery never reaches internal addresses, whatever form DNS gives them in: an AAAA record
// ::ffff:127.9.9.9 (IPv4-mapped) for an MX host with a real SMTP server listening on
// 127.9.9.9:25, which a relay that took the AAAA at face value would connect to. The relay
// runs with the default outbound.ignore_mx_addresses; the bounce goes to the sender's domain.
// Root: the MX host listens on port 25.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DnsServer } from "../helpers/dns.ts";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const ROOT = process.getuid?.() === 0;

describe.skipIf(!ROOT)("MX hosts at internal addresses (root: an MX host on 127.9.9.9:25)", () => {
  let dns: DnsServer;
  let origin: Sink;
  let internal: Sink;
  let relay: Relay;

  beforeAll(async () => {
    dns = await DnsServer.start({
      hosts: {
        "mx.mapped.test": ["::ffff:127.9.9.9"],
        "mx.nat64.test": ["64:ff9b::a9fe:a9fe"],
        "mx.ula.test": ["fd00:9::25"],
      },
      mx: {
        "mapped.test": [{ host: "mx.mapped.test", pref: 10 }],
        "nat64.test": [{ host: "mx.nat64.test", pref: 10 }],
        "ula.test": [{ host: "mx.ula.test", pref: 10 }],
      },
    });
    origin = await Sink.start();
    internal = await Sink.start({}, 25, "127.9.9.9");
    relay = await Relay.start({
      config: {
        relay: { domains: { "origin.test": origin.route } },
        outbound: { mx_delivery: true },
        dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
      },
    });
  }, 30_000);

  afterAll(async () => {
    if (relay) {
      expect(await relay.stop()).toBe(0);
      relay.cleanup();
    }
    await internal?.close();
    await origin?.close();
    await dns?.stop();
  }, 30_000);

  const bounceFor = (rcpt: string) =>
    waitFor(() => origin.messages.find((m) => m.from === "" && m.raw.toString("latin1").includes(`Final-Recipient: rfc822; ${rcpt}`)), 10_000, `the bounce for ${rcpt}`);

  test.each(["eve@mapped.test", "eve@nat64.test", "eve@ula.test"])("%s: bounced with 5.4.4, nothing connects to the internal host", async (rcpt) => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.transaction("alice@origin.test", [rcpt], "Subject: internal\r\n\r\nx\r\n")).code).toBe(250);
    talk.close();
    const dsn = (await bounceFor(rcpt)).raw.toString("latin1");
    expect(dsn).toContain("Status: 5.4.4");
    expect(dsn).toContain("have only ignored addresses (outbound.ignore_mx_addresses)");
    expect(internal.connectionCount).toBe(0);
    expect(internal.messages).toHaveLength(0);
  }, 20_000);

  test("the queue is empty afterwards", async () => {
    await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "an empty queue");
    expect(internal.connectionCount).toBe(0);
  }, 15_000);
});
