// MX delivery through the compiled relay (outbound.mx_delivery) against real DNS (dnsmasq on
// loopback) and real SMTP servers: MX records point at sinks listening on 127.0.25.N:25, which
// needs root. Preference order and fallback to the next host, implicit MX, null MX and NXDOMAIN
// bounces, 4xx and 5xx answers, the TLS policies (with a throwaway CA the relay trusts through
// NODE_EXTRA_CA_CERTS) and MTA-STS, whose policies are served over HTTPS on 127.0.25.100:443.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { selfSigned, TestCa, type KeyPair } from "../helpers/certs.ts";
import { DnsServer } from "../helpers/dns.ts";
import { queueCounts, Relay, tempDir, waitFor, type LogLine, type RelayOptions } from "../helpers/relay.ts";
import { Sink, type SinkBehaviour } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const ROOT = process.getuid?.() === 0;
const POLICY_HOST = "127.0.25.100";
const STS_POLICIES: Record<string, string> = {
  "mta-sts.sts.test": "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
  "mta-sts.stsbad.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
  "mta-sts.stsself.test": "version: STSv1\nmode: enforce\nmx: *.stsself.test\nmax_age: 86400\n",
};

let dir: string;
let ca: TestCa;
let caSigned: KeyPair;
let self: KeyPair;
let dns: DnsServer;
let origin: Sink;
let policyServer: ReturnType<typeof Bun.serve> | null = null;
let relay: Relay;
const policyRequests: string[] = [];

/** Sinks of one test, closed after it (they hold 127.0.25.N:25). */
const sinks: Sink[] = [];
let relayOptions: RelayOptions;

async function mx(address: string, behaviour: SinkBehaviour = {}): Promise<Sink> {
  const sink = await Sink.start(behaviour, 25, address);
  sinks.push(sink);
  return sink;
}

async function send(to: string, subject: string): Promise<void> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction("alice@origin.test", [to], `Subject: ${subject}\r\n\r\nbody\r\n`);
  talk.close();
  expect(r.code).toBe(250);
}

const attempt = (domain: string, pred: (l: LogLine) => boolean = () => true) =>
  relay.waitForLog((l) => l.msg === "delivery attempt" && l.route === `mx://${domain}` && pred(l), 10_000);

const bounceFor = (rcpt: string) => waitFor(() => origin.messages.find((m) => m.from === "" && m.raw.toString("latin1").includes(`Final-Recipient: rfc822; ${rcpt}`)), 10_000, `the bounce for ${rcpt}`);

describe.skipIf(!ROOT)("MX delivery (root: sinks on port 25)", () => {
  beforeAll(async () => {
    dir = tempDir("mailraven-mx-");
    ca = TestCa.create(dir);
    caSigned = ca.issue(["mx.verify.test", "mx.sts.test", "mx.stsbad.test", "mta-sts.sts.test", "mta-sts.stsbad.test", "mta-sts.stsself.test"]);
    self = selfSigned(dir, "mx.stsself.test");
    const hosts: Record<string, string[]> = {
      "mx1.pref.test": ["127.0.25.1"],
      "mx2.pref.test": ["127.0.25.2"],
      "mx3.pref.test": ["127.0.25.3"],
      "implicit.test": ["127.0.25.4"],
      "mx1.greet.test": ["127.0.25.5"],
      "mx2.greet.test": ["127.0.25.6"],
      "mx.later.test": ["127.0.25.7"],
      "mx.reject.test": ["127.0.25.8"],
      "mx.banner.test": ["127.0.25.16"],
      "mx.required.test": ["127.0.25.9"],
      "mx.selfsigned.test": ["127.0.25.10"],
      "mx.opportunistic.test": ["127.0.25.11"],
      "mx.verify.test": ["127.0.25.12"],
      "mx.wrongname.test": ["127.0.25.13"],
      "mx.sts.test": ["127.0.25.14"],
      "mx.stsbad.test": ["127.0.25.15"],
      "mx.stsself.test": ["127.0.25.17"],
      "v6.test": ["::1"],
    };
    const mxRecords: Record<string, { host: string; pref: number }[]> = {
      "pref.test": [
        { host: "mx2.pref.test", pref: 20 },
        { host: "mx1.pref.test", pref: 10 },
        { host: "mx3.pref.test", pref: 30 },
      ],
      "greet.test": [
        { host: "mx1.greet.test", pref: 10 },
        { host: "mx2.greet.test", pref: 20 },
      ],
      "null.test": [{ host: ".", pref: 0 }],
    };
    for (const d of ["later", "reject", "banner", "required", "selfsigned", "opportunistic", "verify", "wrongname", "sts", "stsbad", "stsself"]) mxRecords[`${d}.test`] = [{ host: `mx.${d}.test`, pref: 10 }];
    const txt: Record<string, string[]> = {};
    for (const name of Object.keys(STS_POLICIES)) {
      hosts[name] = [POLICY_HOST];
      txt[name.replace(/^mta-sts\./, "_mta-sts.")] = ["v=STSv1; id=20261121"];
    }
    dns = await DnsServer.start({ hosts, mx: mxRecords, txt });

    policyServer = Bun.serve({
      hostname: POLICY_HOST,
      port: 443,
      tls: { key: caSigned.key, cert: caSigned.cert },
      fetch(req) {
        const host = req.headers.get("host") ?? "";
        policyRequests.push(host);
        const body = new URL(req.url).pathname === "/.well-known/mta-sts.txt" ? STS_POLICIES[host] : undefined;
        return body ? new Response(body, { headers: { "content-type": "text/plain" } }) : new Response("not found", { status: 404 });
      },
    });

    origin = await Sink.start();
    relayOptions = {
      env: { NODE_EXTRA_CA_CERTS: ca.certFile },
      config: {
        relay: { domains: { "origin.test": origin.route } },
        outbound: {
          mx_delivery: true,
          // The MX hosts here are loopback addresses, which the default refuses.
          ignore_mx_addresses: [],
          tls_policy: { default: "opportunistic", domains: { "required.test": "required", "selfsigned.test": "verify", "verify.test": "verify", "wrongname.test": "verify" } },
        },
        dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
        queue: { retry_schedule: ["1s"] },
        delivery: { connect_timeout: "3s" },
      },
    };
    relay = await Relay.start(relayOptions);
  }, 60_000);

  afterAll(async () => {
    if (relay) {
      expect(await relay.stop()).toBe(0);
      relay.cleanup();
    }
    await origin?.close();
    await policyServer?.stop(true);
    await dns?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  const closeSinks = async () => {
    for (const s of sinks.splice(0)) await s.close();
  };

  describe("hosts in preference order", () => {
    test("the first MX is down: the second gets the mail, the third nothing; the log names the host and TLS", async () => {
      const [second, third] = [await mx("127.0.25.2"), await mx("127.0.25.3")];
      await send("bob@pref.test", "pref");
      await waitFor(() => second.messages.length === 1, 10_000, "delivery to mx2");
      expect(second.messages[0]!.to).toEqual(["bob@pref.test"]);
      expect(third.messages).toHaveLength(0);
      const line = await attempt("pref.test");
      expect(line).toMatchObject({ delivered: 1, mx: "mx2.pref.test[127.0.25.2]", tls: "none" });
      expect(relay.logs.some((l) => l.msg === "mx host failed" && l.mx === "mx1.pref.test[127.0.25.1]")).toBe(true);
      await closeSinks();
    }, 20_000);

    test("no MX record: the domain's own address (implicit MX)", async () => {
      const sink = await mx("127.0.25.4");
      await send("carol@implicit.test", "implicit");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery to the implicit MX");
      expect((await attempt("implicit.test")).mx).toBe("implicit.test[127.0.25.4]");
      await closeSinks();
    }, 20_000);

    test("an IPv6-only host", async () => {
      const sink = await mx("::1");
      await send("dave@v6.test", "v6");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery over IPv6");
      expect((await attempt("v6.test")).mx).toBe("v6.test[::1]");
      await closeSinks();
    }, 20_000);

    test("a 421 greeting moves on to the next MX host", async () => {
      const busy = await mx("127.0.25.5", { greeting: () => ({ code: 421, message: "4.3.2 Too busy" }) });
      const next = await mx("127.0.25.6");
      await send("erin@greet.test", "greet");
      await waitFor(() => next.messages.length === 1, 10_000, "delivery to mx2");
      expect(busy.connectionCount).toBe(1);
      expect(busy.messages).toHaveLength(0);
      await closeSinks();
    }, 20_000);
  });

  describe("answers", () => {
    test("4xx at RCPT, accepted on the retry: delivered once", async () => {
      const sink = await mx("127.0.25.7", { rcpt: (_a, n) => (n === 1 ? { code: 451, message: "4.7.1 Try again later" } : undefined) });
      await send("frank@later.test", "later");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery on the retry");
      await waitFor(() => relay.logs.filter((l) => l.msg === "delivery attempt" && l.route === "mx://later.test").length === 2, 5000, "two attempts");
      expect(relay.logs.filter((l) => l.msg === "delivery attempt" && l.route === "mx://later.test").map((l) => [l.deferred, l.delivered])).toEqual([
        [1, 0],
        [0, 1],
      ]);
      await closeSinks();
    }, 20_000);

    test("5xx at RCPT: a bounce with the remote server's reply", async () => {
      await mx("127.0.25.8", { rcpt: () => ({ code: 550, message: "5.1.1 No such user" }) });
      await send("gina@reject.test", "reject");
      const dsn = (await bounceFor("gina@reject.test")).raw.toString("latin1");
      expect(dsn).toContain("Status: 5.1.1");
      expect(dsn).toContain("Diagnostic-Code: smtp; 550 5.1.1 No such user");
      await closeSinks();
    }, 20_000);

    test("a 554 greeting from the last (only) MX host: a bounce", async () => {
      await mx("127.0.25.16", { greeting: () => ({ code: 554, message: "5.7.1 No service for you" }) });
      await send("hank@banner.test", "banner");
      const dsn = (await bounceFor("hank@banner.test")).raw.toString("latin1");
      expect(dsn).toContain("Status: 5.7.1");
      expect(dsn).toContain("Diagnostic-Code: smtp; 554 5.7.1 No service for you");
      await closeSinks();
    }, 20_000);

    test("a null MX (RFC 7505): bounced at once with 5.1.10", async () => {
      await send("ivy@null.test", "null mx");
      const dsn = (await bounceFor("ivy@null.test")).raw.toString("latin1");
      expect(dsn).toContain("Status: 5.1.10");
      expect(dsn).toContain("Diagnostic-Code: x-mailraven; 5.1.10 Domain null.test does not accept mail (null MX)");
      expect(relay.logs.filter((l) => l.msg === "delivery attempt" && l.route === "mx://null.test")).toHaveLength(1);
    }, 20_000);

    test("a domain that does not exist: bounced at once with 5.1.2", async () => {
      await send("jack@nowhere.test", "nxdomain");
      const dsn = (await bounceFor("jack@nowhere.test")).raw.toString("latin1");
      expect(dsn).toContain("Status: 5.1.2");
      expect(dsn).toContain("nowhere.test does not exist");
    }, 20_000);
  });

  describe("TLS policy", () => {
    test("opportunistic against a STARTTLS host with a self-signed certificate: delivered over TLS", async () => {
      const sink = await mx("127.0.25.11", { tls: self });
      await send("kim@opportunistic.test", "opportunistic");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery");
      expect(sink.messages[0]!.tls).toMatch(/^TLSv1\.[23]$/);
      expect((await attempt("opportunistic.test")).tls).toBe(sink.messages[0]!.tls!);
      await closeSinks();
    }, 20_000);

    test("required against a host without STARTTLS: deferred with 4.7.5, nothing sent", async () => {
      const sink = await mx("127.0.25.9");
      await send("leo@required.test", "required");
      const line = await attempt("required.test");
      expect(line.deferred).toBe(1);
      expect(line.response).toBe("4.7.5 TLS required but not available: mx.required.test[127.0.25.9] does not offer STARTTLS");
      expect(sink.messages).toHaveLength(0);
      await closeSinks();
    }, 20_000);

    test("verify against a self-signed certificate: deferred with 4.7.5", async () => {
      const sink = await mx("127.0.25.10", { tls: self });
      await send("mia@selfsigned.test", "selfsigned");
      const line = await attempt("selfsigned.test");
      expect(line.deferred).toBe(1);
      expect(String(line.response)).toStartWith("4.7.5 TLS required but not available: mx.selfsigned.test[127.0.25.10]: TLS handshake failed");
      expect(sink.messages).toHaveLength(0);
      await closeSinks();
    }, 20_000);

    test("verify against a certificate from a trusted CA naming the MX host: delivered over TLS", async () => {
      const sink = await mx("127.0.25.12", { tls: caSigned });
      await send("ned@verify.test", "verify");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery");
      expect(sink.messages[0]!.tls).toMatch(/^TLSv1\.[23]$/);
      await closeSinks();
    }, 20_000);

    test("verify against a trusted certificate for another name: deferred with 4.7.5", async () => {
      const sink = await mx("127.0.25.13", { tls: caSigned });
      await send("olga@wrongname.test", "wrong name");
      const line = await attempt("wrongname.test");
      expect(line.deferred).toBe(1);
      expect(String(line.response)).toMatch(/^4\.7\.5 TLS required but not available: mx\.wrongname\.test\[127\.0\.25\.13\]: TLS handshake failed: .*(altnames|mx\.wrongname\.test)/);
      expect(sink.messages).toHaveLength(0);
      await closeSinks();
    }, 20_000);
  });

  describe("MTA-STS", () => {
    test("enforce, the MX host listed and its certificate valid: delivered over TLS; the policy came over HTTPS", async () => {
      const sink = await mx("127.0.25.14", { tls: caSigned });
      await send("pat@sts.test", "sts");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery");
      expect(sink.messages[0]!.tls).toMatch(/^TLSv1\.[23]$/);
      expect(policyRequests).toContain("mta-sts.sts.test");
      expect(relay.logs.filter((l) => l.msg === "mta-sts policy not fetched")).toEqual([]);
      await closeSinks();
    }, 20_000);

    test("the policy outlives a restart: the restarted relay delivers over TLS without fetching it again", async () => {
      // Delivery runs on a thread of its own; the policy state belongs to the SMTP thread.
      const fetched = policyRequests.filter((h) => h === "mta-sts.sts.test").length;
      expect(fetched).toBeGreaterThan(0);
      expect(await relay.stop()).toBe(0);
      relay = await Relay.start({ ...relayOptions, dir: relay.dir });
      const sink = await mx("127.0.25.14", { tls: caSigned });
      await send("pat@sts.test", "sts after restart");
      await waitFor(() => sink.messages.length === 1, 10_000, "delivery");
      expect(sink.messages[0]!.tls).toMatch(/^TLSv1\.[23]$/);
      expect(policyRequests.filter((h) => h === "mta-sts.sts.test")).toHaveLength(fetched);
      await closeSinks();
    }, 30_000);

    test("enforce, the MX host not listed: deferred with 4.7.5 without connecting", async () => {
      const sink = await mx("127.0.25.15", { tls: caSigned });
      await send("quinn@stsbad.test", "sts mismatch");
      const line = await attempt("stsbad.test");
      expect(line.deferred).toBe(1);
      expect(line.response).toBe("4.7.5 MTA-STS policy of stsbad.test allows none of its MX hosts (mx.stsbad.test)");
      expect(sink.connectionCount).toBe(0);
      await closeSinks();
    }, 20_000);

    test("enforce raises opportunistic to verify: a self-signed MX certificate is deferred", async () => {
      const sink = await mx("127.0.25.17", { tls: self });
      await send("rose@stsself.test", "sts self-signed");
      const line = await attempt("stsself.test");
      expect(line.deferred).toBe(1);
      expect(String(line.response)).toStartWith("4.7.5 TLS required but not available: mx.stsself.test[127.0.25.17]: TLS handshake failed");
      expect(sink.messages).toHaveLength(0);
      await closeSinks();
    }, 20_000);
  });

  test("by default MX hosts on loopback are never tried: bounced with 5.4.4", async () => {
    const strict = await Relay.start({
      config: {
        relay: { domains: { "origin.test": origin.route } },
        outbound: { mx_delivery: true },
        dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
      },
    });
    try {
      const sink = await mx("127.0.25.4");
      const { talk } = await SmtpTalk.open(strict.port);
      await talk.send("EHLO client.test");
      expect((await talk.transaction("alice@origin.test", ["sam@implicit.test"], "Subject: loopback\r\n\r\nx\r\n")).code).toBe(250);
      talk.close();
      const dsn = (await bounceFor("sam@implicit.test")).raw.toString("latin1");
      expect(dsn).toContain("Status: 5.4.4");
      expect(dsn).toContain("have only ignored addresses (outbound.ignore_mx_addresses)");
      expect(sink.connectionCount).toBe(0);
      await closeSinks();
    } finally {
      expect(await strict.stop()).toBe(0);
      strict.cleanup();
    }
  }, 20_000);

  test("every message above has left the queue (delivered or bounced)", async () => {
    await waitFor(() => queueCounts(relay.dir).messages === 0, 15_000, "an empty queue");
  }, 20_000);
});
