// The edge defenses against a real DNS server (dnsmasq on loopback): weighted DNS lists, DNS
// failures failing open, greylisting, rate limits, connection rate and the blocklist.
// 127.0.0.0/8 plays the internet here: relay_networks is a network no test client uses.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import parsePrometheus from "parse-prometheus-text-format";
import { BlackholeDns, DnsServer } from "../helpers/dns.ts";
import { BINARY, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

const UNTRUSTED = { relay_networks: ["10.99.99.0/24"] };
let dns: DnsServer;
let sink: Sink;
const relays: Relay[] = [];

beforeAll(async () => {
  dns = await DnsServer.start({
    a: {
      "1.0.0.127.zen.test": "127.0.0.2", // listed, in the filter: weight 3
      "3.0.0.127.weak.test": "127.0.0.2", // 1 ...
      "3.0.0.127.weak2.test": "127.0.0.2", // ... + 2 = 3
      "4.0.0.127.zen.test": "127.0.0.4", // 3 ...
      "4.0.0.127.wl.test": "127.0.5.2", // ... - 2 = 1: below the threshold
      "5.0.0.127.zen.test": "127.0.0.200", // outside [2..11]: not counted
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.zen.test": "127.0.0.2", // ::1
    },
  });
  sink = await Sink.start();
}, 60_000);
afterAll(async () => {
  await Promise.all(
    relays.map(async (r) => {
      expect(await r.stop()).toBe(0);
      r.cleanup();
    }),
  );
  await sink.close();
  await dns.stop();
}, 60_000);

async function relayWith(config: Record<string, unknown>): Promise<Relay> {
  const relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, ...UNTRUSTED }, dns: { servers: [dns.address], timeout: "300ms", attempts: 1 }, ...config } });
  relays.push(relay);
  return relay;
}

async function greeting(port: number, from: string, host = "127.0.0.1") {
  const { talk, greeting } = await SmtpTalk.open(port, { localAddress: from, host });
  return { talk, greeting };
}

async function metric(relay: Relay, name: string, labels: Record<string, string> = {}): Promise<number> {
  const families = parsePrometheus(await (await relay.admin("GET", "/metrics", null)).text());
  const m = families.find((f) => f.name === name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return Number(m?.value ?? 0);
}

const DNSBL = { zones: ["zen.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-2", "weak.test", "weak2.test*2"], threshold: 3 };

describe("DNS lists", () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await relayWith({ defenses: { dnsbl: DNSBL, connection_rate: 0 }, smtp: { listen: ["127.0.0.1:0"] } });
  }, 60_000);

  test("a listed client is refused before the greeting: 554 5.7.1 naming the list", async () => {
    const { talk, greeting: g } = await greeting(relay.port, "127.0.0.1");
    expect(g.code).toBe(554);
    expect(g.text).toBe("5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.test");
    await talk.closed;
  });

  test("weights of several lists add up to the threshold", async () => {
    const { talk, greeting: g } = await greeting(relay.port, "127.0.0.3");
    expect(g.code).toBe(554);
    expect(g.text).toContain("blocked using weak2.test");
    await talk.closed;
  });

  test("an allowlist's negative weight keeps a listed client under the threshold; answers outside the filter do not count", async () => {
    for (const ip of ["127.0.0.4", "127.0.0.5", "127.0.0.6"]) {
      const { talk, greeting: g } = await greeting(relay.port, ip);
      expect(g.code).toBe(220);
      talk.close();
    }
  });

  test("answers are cached: a second connection asks the DNS server nothing new", async () => {
    const before = dns.queries("1.0.0.127.zen.test");
    expect(before).toBeGreaterThanOrEqual(1);
    const { talk } = await greeting(relay.port, "127.0.0.1");
    await talk.closed;
    expect(dns.queries("1.0.0.127.zen.test")).toBe(before);
    expect(await metric(relay, "mailraven_dnsbl_lookups_total", { zone: "zen.test", result: "listed" })).toBeGreaterThanOrEqual(2);
  });

  test("IPv6 clients are looked up by reversed nibbles", async () => {
    const v6 = await relayWith({ defenses: { dnsbl: DNSBL }, smtp: { listen: ["[::1]:0"] } });
    const { talk, greeting: g } = await greeting(v6.port, "::1", "::1");
    expect(g.code).toBe(554);
    expect(g.text).toBe("5.7.1 Service unavailable; client [::1] blocked using zen.test");
    await talk.closed;
  });

  test("a DNS server that does not answer fails open, and the failure is logged and counted", async () => {
    const hole = await BlackholeDns.start();
    try {
      const blind = await Relay.start({
        config: { relay: { domains: { "dest.test": sink.route }, ...UNTRUSTED }, dns: { servers: [hole.address], timeout: "200ms", attempts: 1 }, defenses: { dnsbl: DNSBL } },
      });
      relays.push(blind);
      const { talk, greeting: g } = await greeting(blind.port, "127.0.0.1");
      expect(g.code).toBe(220);
      talk.close();
      await blind.waitForLog((l) => l.msg === "dns list lookup failed; treated as not listed" && l.zone === "zen.test");
      expect(await metric(blind, "mailraven_dnsbl_lookups_total", { zone: "zen.test", result: "error" })).toBe(1);
    } finally {
      await hole.stop();
    }
  });
});

describe("greylisting", () => {
  test("first sight 451 4.7.1, too early 451, after the delay 250, and known afterwards, also after a restart", async () => {
    const config = { defenses: { greylist: { delay: "2s", retry_window: "1m" } } };
    const relay = await relayWith(config);
    const rcpt = async (to: string, from = "127.0.0.1") => {
      const { talk } = await SmtpTalk.open(relay.port, { localAddress: from });
      await talk.send("EHLO sender.test");
      await talk.send("MAIL FROM:<news@sender.test>");
      const r = await talk.send(`RCPT TO:<${to}>`);
      talk.close();
      return r;
    };
    const first = await rcpt("bob@dest.test");
    expect(first.code).toBe(451);
    expect(first.text).toBe("4.7.1 Greylisted, please try again in 2 seconds");
    const early = await rcpt("bob@dest.test", "127.0.0.2"); // same /24, same triplet
    expect(early.code).toBe(451);
    await Bun.sleep(2100);
    expect((await rcpt("bob@dest.test")).code).toBe(250);
    expect((await rcpt("bob@dest.test")).code).toBe(250);
    expect((await rcpt("carol@dest.test")).code).toBe(451); // another triplet waits again

    await relay.stop();
    const restarted = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, ...UNTRUSTED }, ...config }, dir: relay.dir });
    relays.push(restarted);
    const { talk } = await SmtpTalk.open(restarted.port);
    await talk.send("EHLO sender.test");
    await talk.send("MAIL FROM:<news@sender.test>");
    expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
    talk.close();
    expect(await metric(restarted, "mailraven_greylist_decisions_total", { decision: "pass" })).toBe(1);
  }, 30_000);

  test("allowlisted recipients pass at once; a network that passed often is allowlisted", async () => {
    const relay = await relayWith({ defenses: { greylist: { delay: "1s", auto_allowlist_after: 2, allow_recipients: ["postmaster@dest.test"] } } });
    const rcpt = async (to: string) => {
      const { talk } = await SmtpTalk.open(relay.port);
      await talk.send("EHLO sender.test");
      await talk.send("MAIL FROM:<a@sender.test>");
      const r = await talk.send(`RCPT TO:<${to}>`);
      talk.close();
      return r.code;
    };
    expect(await rcpt("postmaster@dest.test")).toBe(250);
    expect(await rcpt("one@dest.test")).toBe(451);
    expect(await rcpt("two@dest.test")).toBe(451);
    await Bun.sleep(1100);
    expect(await rcpt("one@dest.test")).toBe(250);
    expect(await rcpt("two@dest.test")).toBe(250);
    expect(await rcpt("three@dest.test")).toBe(250); // the network is now allowlisted
  }, 30_000);
});

describe("rate limits, connection rate and blocklist", () => {
  test("messages per client IP: the fourth MAIL in the window gets 450 4.7.1", async () => {
    const relay = await relayWith({ defenses: { rate_limits: { per_ip: "3/1h" } } });
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO sender.test");
    for (let i = 0; i < 3; i++) {
      expect((await talk.transaction(`m${i}@sender.test`, ["bob@dest.test"], "Subject: x\r\n\r\nx\r\n")).code).toBe(250);
    }
    const r = await talk.send("MAIL FROM:<m3@sender.test>");
    expect(r.code).toBe(450);
    expect(r.text).toBe("4.7.1 Rate limit exceeded for [127.0.0.1], try again later");
    talk.close();
  });

  test("messages per sender domain", async () => {
    const relay = await relayWith({ defenses: { rate_limits: { per_sender_domain: "2/1h" } } });
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO sender.test");
    for (let i = 0; i < 2; i++) expect((await talk.transaction(`x${i}@bulk.test`, ["bob@dest.test"], "Subject: x\r\n\r\nx\r\n")).code).toBe(250);
    const r = await talk.send("MAIL FROM:<x2@bulk.test>");
    expect(r.code).toBe(450);
    expect(r.text).toContain("sender domain bulk.test");
    await talk.send("RSET");
    expect((await talk.send("MAIL FROM:<y@other.test>")).code).toBe(250);
    talk.close();
  });

  test("connections per minute from one IP: the next gets 421 4.7.0", async () => {
    const relay = await relayWith({ defenses: { connection_rate: 3 } });
    for (let i = 0; i < 3; i++) {
      const { talk, greeting: g } = await greeting(relay.port, "127.0.0.20");
      expect(g.code).toBe(220);
      talk.close();
    }
    const { talk, greeting: g } = await greeting(relay.port, "127.0.0.20");
    expect(g.code).toBe(421);
    expect(g.text).toBe("4.7.0 Too many connections from [127.0.0.20], slow down and try again later");
    await talk.closed;
    const other = await greeting(relay.port, "127.0.0.21");
    expect(other.greeting.code).toBe(220);
    other.talk.close();
  });

  test("a blocklisted network is refused with 554 5.7.1", async () => {
    const relay = await relayWith({ defenses: { blocklist: ["127.0.0.30/31"] } });
    const { talk, greeting: g } = await greeting(relay.port, "127.0.0.31");
    expect(g.code).toBe(554);
    expect(g.text).toBe("5.7.1 Service unavailable; client [127.0.0.31] is blocked");
    await talk.closed;
    const ok = await greeting(relay.port, "127.0.0.32");
    expect(ok.greeting.code).toBe(220);
    ok.talk.close();
    await waitFor(() => relay.logs.some((l) => l.msg === "connection refused" && l.reason === "blocklist"), 5000, "the log line");
  });
});

describe("admin API and CLI for the greylist and the blocklist", () => {
  const cli = (relay: Relay, ...args: string[]) => exec([BINARY, ...args, "--config", relay.cliConfigPath()]);

  test("list and remove greylist triplets", async () => {
    const relay = await relayWith({ defenses: { greylist: { delay: "1h" } } });
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO sender.test");
    await talk.send("MAIL FROM:<g@sender.test>");
    expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(451);
    talk.close();
    const body = (await (await relay.admin("GET", "/admin/greylist")).json()) as { entries: Record<string, unknown>[] };
    expect(body.entries).toEqual([expect.objectContaining({ network: "127.0.0.0/24", sender: "g@sender.test", recipient: "bob@dest.test", state: "waiting", passes: 0 })]);
    const ls = await cli(relay, "greylist", "ls");
    expect(ls.code).toBe(0);
    expect(ls.out).toContain("127.0.0.0/24");
    const rm = await cli(relay, "greylist", "rm", "127.0.0.0/24", "g@sender.test", "bob@dest.test", "--json");
    expect(JSON.parse(rm.out)).toEqual({ removed: 1 });
    expect((await relay.admin("DELETE", "/admin/greylist")).status).toBe(400);
  });

  test("a passed triplet removed by the admin is greylisted again at once (no stale cache)", async () => {
    const relay = await relayWith({ defenses: { greylist: { delay: "1s" } } });
    const rcpt = async () => {
      const { talk } = await SmtpTalk.open(relay.port);
      await talk.send("EHLO sender.test");
      await talk.send("MAIL FROM:<h@sender.test>");
      const r = await talk.send("RCPT TO:<bob@dest.test>");
      talk.close();
      return r.code;
    };
    expect(await rcpt()).toBe(451);
    await Bun.sleep(1100);
    expect(await rcpt()).toBe(250);
    expect((await cli(relay, "greylist", "rm", "127.0.0.0/24")).code).toBe(0);
    expect(await rcpt()).toBe(451);
  });

  test("block and unblock an address at run time, with expiry", async () => {
    const relay = await relayWith({});
    const add = await cli(relay, "block", "add", "127.0.0.40", "--for", "1h", "--reason", "brute force", "--json");
    expect(add.code).toBe(0);
    expect(JSON.parse(add.out)).toMatchObject({ cidr: "127.0.0.40", reason: "brute force" });
    const refused = await greeting(relay.port, "127.0.0.40");
    expect(refused.greeting.code).toBe(554);
    await refused.talk.closed;
    const ls = await cli(relay, "block", "ls");
    expect(ls.out).toContain("brute force");
    const bad = await relay.admin("POST", "/admin/blocklist");
    expect(bad.status).toBe(400);
    expect((await cli(relay, "block", "rm", "127.0.0.40")).code).toBe(0);
    const welcome = await greeting(relay.port, "127.0.0.40");
    expect(welcome.greeting.code).toBe(220);
    welcome.talk.close();
    expect((await cli(relay, "block", "rm", "127.0.0.40")).err).toContain("not on the blocklist");
  });
});
