// STARTTLS towards configured routes (relay.domains next hops and the smarthost), set per route
// with ?tls=: verify checks the certificate (here one from a test CA trusted through
// NODE_EXTRA_CA_CERTS, for the next hop's address), required insists on an encrypted session,
// none never tries, and a route without ?tls= stays opportunistic.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { selfSigned, TestCa } from "../helpers/certs.ts";
import { Relay, tempDir, waitFor, type LogLine } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let caDir: string;
let trusted: Sink; // STARTTLS with a certificate for 127.0.0.1 from the trusted test CA
let selfish: Sink; // STARTTLS with a self-signed certificate
let plain: Sink; // no STARTTLS at all
let relay: Relay;

const route = (sink: Sink, tls?: string) => `smtp://127.0.0.1:${sink.port}${tls ? `?tls=${tls}` : ""}`;

beforeAll(async () => {
  caDir = tempDir("mailraven-route-tls-");
  const ca = TestCa.create(caDir);
  trusted = await Sink.start({ tls: ca.issue(["127.0.0.1"]) });
  selfish = await Sink.start({ tls: selfSigned(caDir, "hop.test") });
  plain = await Sink.start();
  relay = await Relay.start({
    env: { NODE_EXTRA_CA_CERTS: ca.certFile },
    config: {
      relay: {
        domains: {
          "verify.test": route(trusted, "verify"),
          "selfsigned.test": route(selfish, "verify"),
          "required.test": route(plain, "required"),
          "none.test": route(trusted, "none"),
          "default.test": route(plain),
          "mapped.test": { route: route(selfish, "required"), spf_fail: "tag" },
        },
        relay_networks: ["127.0.0.0/8"],
        smarthost: route(plain, "required"),
      },
      queue: { retry_schedule: ["1h"] },
    },
  });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([trusted.close(), selfish.close(), plain.close()]);
  rmSync(caDir, { recursive: true, force: true });
}, 30_000);

/** Sends one message to `rcpt` and returns the relay's log line for its first delivery attempt. */
async function deliver(rcpt: string): Promise<LogLine> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction("alice@origin.test", [rcpt], `Subject: to ${rcpt}\r\n\r\nhello\r\n`);
  talk.close();
  expect(r.code).toBe(250);
  const id = /queued as (\S+)/.exec(r.text)![1];
  return relay.waitForLog((l) => l.msg === "delivery attempt" && l.queue_id === id, 15_000);
}

const received = (sink: Sink, rcpt: string) => sink.messages.filter((m) => m.to.includes(rcpt));
const arrived = (sink: Sink, rcpt: string) => waitFor(() => received(sink, rcpt)[0], 10_000, `delivery to ${rcpt}`);

describe("?tls= on configured routes", () => {
  test("verify: a certificate from a trusted CA for the next hop's address is accepted; the mail goes over TLS", async () => {
    const line = await deliver("ann@verify.test");
    expect(line.delivered).toBe(1);
    expect((await arrived(trusted, "ann@verify.test")).tls).toMatch(/^TLSv1\.[23]$/);
  }, 30_000);

  test("verify: a self-signed certificate is refused with 4.7.5 and the mail waits (never sent in clear)", async () => {
    const line = await deliver("bob@selfsigned.test");
    expect(line.deferred).toBe(1);
    expect(String(line.response)).toStartWith("4.7.5 ");
    expect(received(selfish, "bob@selfsigned.test")).toEqual([]);
  }, 30_000);

  test("required: a next hop without STARTTLS gets nothing; 4.7.5, deferred", async () => {
    const line = await deliver("cat@required.test");
    expect(line.deferred).toBe(1);
    expect(String(line.response)).toStartWith("4.7.5 ");
    expect(received(plain, "cat@required.test")).toEqual([]);
  }, 30_000);

  test("required in the mapping form (route: plus a domain policy): the self-signed hop is fine, encrypted", async () => {
    const line = await deliver("dan@mapped.test");
    expect(line.delivered).toBe(1);
    expect((await arrived(selfish, "dan@mapped.test")).tls).not.toBeNull();
  }, 30_000);

  test("none: never STARTTLS, even where it is offered", async () => {
    const line = await deliver("eve@none.test");
    expect(line.delivered).toBe(1);
    expect((await arrived(trusted, "eve@none.test")).tls).toBeNull();
  }, 30_000);

  test("no ?tls=: opportunistic as before, so a hop without STARTTLS still gets the mail", async () => {
    const line = await deliver("fay@default.test");
    expect(line.delivered).toBe(1);
    expect(received(plain, "fay@default.test")).toHaveLength(1);
  }, 30_000);

  test("the smarthost takes ?tls= too: required towards a hop without STARTTLS defers", async () => {
    const line = await deliver("gus@elsewhere.example");
    expect(line.route).toBe(route(plain, "required"));
    expect(line.deferred).toBe(1);
    expect(String(line.response)).toStartWith("4.7.5 ");
    expect(received(plain, "gus@elsewhere.example")).toEqual([]);
  }, 30_000);
});
