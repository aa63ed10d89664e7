// Two relay processes sharing their policy state in a real redis-server (cluster.enabled):
// greylisting, rate limits and the blocklist hold across both; /admin/cluster and `mailraven
// cluster ls` list them. 127.0.0.0/8 plays the internet (relay_networks is a network no test
// client uses). The outage test (Redis killed and paused under load) is cluster-outage.test.ts.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { selfSigned } from "../helpers/certs.ts";
import { metric } from "../helpers/observe.ts";
import { RedisServer } from "../helpers/redis.ts";
import { ADMIN_TOKEN, BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk, type Reply } from "../helpers/smtp-talk.ts";

let redis: RedisServer;
let sink: Sink;
const relays: Relay[] = [];
let prefixes = 0;

beforeAll(async () => {
  redis = await RedisServer.start();
  sink = await Sink.start();
}, 60_000);

afterAll(async () => {
  await Promise.all(relays.map(async (r) => (expect(await r.stop()).toBe(0), r.cleanup())));
  await sink.close();
  await redis.stop();
});

/** Nodes "a" and "b" on one Redis, under a key prefix of their own (so tests do not meet). */
async function pair(config: Record<string, unknown> = {}): Promise<[Relay, Relay, string]> {
  const prefix = `t${prefixes++}:`;
  const start = (name: string) =>
    Relay.start({
      config: {
        relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
        ...config,
        cluster: { enabled: true, redis: redis.url, key_prefix: prefix, node_name: name, refresh_interval: "1s", heartbeat: "1s" },
      },
    });
  const both = await Promise.all([start("a"), start("b")]);
  relays.push(...both);
  return [both[0], both[1], prefix];
}

/** EHLO, MAIL and RCPT on a fresh connection from `from`; the RCPT reply (or the first refusal). */
async function rcpt(relay: Relay, to: string, sender = "news@sender.test", from = "127.0.0.1"): Promise<Reply> {
  const { talk, greeting } = await SmtpTalk.open(relay.port, { localAddress: from });
  try {
    if (greeting.code !== 220) return greeting;
    await talk.send("EHLO sender.test");
    const mail = await talk.send(`MAIL FROM:<${sender}>`);
    if (mail.code !== 250) return mail;
    return await talk.send(`RCPT TO:<${to}>`);
  } finally {
    talk.close();
  }
}

/** The greeting `from` gets on `relay` once it is no longer 220 (the node loads a change made elsewhere in the background). */
async function refusedOn(relay: Relay, from: string): Promise<string> {
  return waitFor(async () => {
    const { talk, greeting } = await SmtpTalk.open(relay.port, { localAddress: from });
    talk.close();
    return greeting.code === 220 ? null : `${greeting.code} ${greeting.text}`;
  }, 10_000, `${from} to be refused`);
}

async function mailFrom(relay: Relay, from: string): Promise<Reply> {
  const { talk } = await SmtpTalk.open(relay.port, { localAddress: from });
  try {
    await talk.send("EHLO sender.test");
    return await talk.send("MAIL FROM:<someone@sender.test>");
  } finally {
    talk.close();
  }
}

describe("shared greylisting", () => {
  test("greylisted on node A, retried on node B after the delay: accepted, and the message arrives", async () => {
    const [a, b, prefix] = await pair({ defenses: { greylist: { delay: "2s", retry_window: "1h" } } });
    const first = await rcpt(a, "bob@dest.test");
    expect(`${first.code} ${first.text}`).toBe("451 4.7.1 Greylisted, please try again in 2 seconds");
    // B knows the triplet A wrote (an early retry, not a new triplet).
    const early = await rcpt(b, "bob@dest.test");
    expect(early.code).toBe(451);
    expect(await metric(b, "mailraven_greylist_decisions_total", { decision: "early" })).toBe(1);
    expect(await metric(b, "mailraven_greylist_decisions_total", { decision: "new" })).toBe(0);
    expect(await redis.send("EXISTS", [`${prefix}gl:127.0.0.0/24 news@sender.test bob@dest.test`])).toBeTruthy();
    // The retry after the delay, on B.
    await Bun.sleep(2100);
    expect((await rcpt(b, "bob@dest.test")).code).toBe(250);
    expect(await metric(b, "mailraven_greylist_decisions_total", { decision: "pass" })).toBe(1);
    expect(await metric(b, "mailraven_greylist_decisions_total", { decision: "new" })).toBe(0);
    // The whole message now goes through B, and A knows the triplet passed.
    const { talk } = await SmtpTalk.open(b.port);
    await talk.send("EHLO sender.test");
    expect((await talk.transaction("news@sender.test", ["bob@dest.test"], "Subject: greylist across nodes\r\n\r\nhello\r\n")).code).toBe(250);
    talk.close();
    await waitFor(() => sink.messages.some((m) => m.raw.toString().includes("Subject: greylist across nodes")), 10_000, "the message at the sink");
    expect((await rcpt(a, "bob@dest.test")).code).toBe(250);
    expect(await metric(a, "mailraven_greylist_decisions_total", { decision: "pass" })).toBe(1);
  }, 60_000);

  test("a triplet removed through node B's admin API is greylisted again on node A, whose memory had it passed", async () => {
    const [a, b] = await pair({ defenses: { greylist: { delay: "1s", retry_window: "1h" } } });
    expect((await rcpt(a, "carol@dest.test")).code).toBe(451);
    await Bun.sleep(1100);
    expect((await rcpt(a, "carol@dest.test")).code).toBe(250);
    const listed = (await (await b.admin("GET", "/admin/greylist")).json()) as { entries: { network: string; recipient: string; state: string }[] };
    expect(listed.entries.map((e) => [e.network, e.recipient, e.state])).toEqual([["127.0.0.0/24", "carol@dest.test", "passed"]]);
    const removed = await b.admin("DELETE", "/admin/greylist?network=127.0.0.0/24");
    expect(await removed.json()).toEqual({ removed: 1 });
    // A's cached copy goes with the change notice: the next attempt is a new triplet.
    await waitFor(async () => ((await rcpt(a, "carol@dest.test")).code === 451 ? true : null), 10_000, "A to greylist the removed triplet again");
  }, 60_000);
});

describe("shared rate limits", () => {
  test("5 messages per hour per client IP hold across both nodes together", async () => {
    const [a, b, prefix] = await pair({ defenses: { rate_limits: { per_ip: "5/1h" } } });
    const codes: number[] = [];
    for (const node of [a, b, a, b, a, b, a]) codes.push((await mailFrom(node, "127.0.0.3")).code);
    expect(codes).toEqual([250, 250, 250, 250, 250, 450, 450]);
    const refused = await mailFrom(b, "127.0.0.3");
    expect(refused.text).toBe("4.7.1 Rate limit exceeded for [127.0.0.3], try again later");
    // Another client has its own bucket; the bucket is in Redis with its TTL.
    expect((await mailFrom(a, "127.0.0.4")).code).toBe(250);
    const ttl = Number(await redis.send("PTTL", [`${prefix}rl:ip 127.0.0.3`]));
    expect(ttl).toBeGreaterThan(3_500_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
  }, 60_000);

  test("under concurrency: 40 MAILs at once over both nodes against a limit of 12 get exactly 12 accepted", async () => {
    const [a, b] = await pair({ defenses: { rate_limits: { per_ip: "12/1h" }, connection_rate: 0 }, smtp: { max_connections_per_ip: 100 } });
    // The sessions are opened first, then every MAIL is sent at once.
    const sessions = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
      const { talk } = await SmtpTalk.open((i % 2 ? a : b).port, { localAddress: "127.0.0.5" });
      await talk.send("EHLO sender.test");
      return talk;
    }));
    const replies = await Promise.all(sessions.map((t) => t.send("MAIL FROM:<x@sender.test>")));
    for (const t of sessions) t.close();
    expect(replies.filter((r) => r.code === 250).length).toBe(12);
    expect(replies.filter((r) => r.code === 450).length).toBe(28);
  }, 60_000);

  test("connections per minute per client count on both nodes together", async () => {
    const [a, b] = await pair({ defenses: { connection_rate: 3 } });
    const greetings: number[] = [];
    for (const node of [a, b, a, b]) {
      const { talk, greeting } = await SmtpTalk.open(node.port, { localAddress: "127.0.0.6" });
      greetings.push(greeting.code);
      talk.close();
    }
    expect(greetings).toEqual([220, 220, 220, 421]);
  }, 60_000);
});

describe("shared blocklist", () => {
  test("a block added through node A's admin API refuses the client on node B; removed on B, A takes it again", async () => {
    // No connection rate: the test polls until the other node has loaded the change.
    const [a, b] = await pair({ defenses: { connection_rate: 0 } });
    expect((await SmtpTalk.open(b.port, { localAddress: "127.0.0.9" })).greeting.code).toBe(220);
    const added = await fetch(`http://127.0.0.1:${a.adminPort}/admin/blocklist`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ cidr: "127.0.0.9", reason: "abuse seen on a", expires_in: "1h" }),
    });
    expect(added.status).toBe(201);
    expect(await refusedOn(b, "127.0.0.9")).toBe("554 5.7.1 Service unavailable; client [127.0.0.9] is blocked");
    expect(b.logs.some((l) => l.msg === "cluster blocklist reloaded")).toBe(true);
    const onB = (await (await b.admin("GET", "/admin/blocklist")).json()) as { entries: { cidr: string; reason: string }[] };
    expect(onB.entries).toEqual([expect.objectContaining({ cidr: "127.0.0.9", reason: "abuse seen on a" })]);
    // The command line on B removes it for both.
    const rm = await run([BINARY, "block", "rm", "127.0.0.9", "--config", b.cliConfigPath()]);
    expect(rm.code).toBe(0);
    await waitFor(async () => {
      const { talk: t, greeting: g } = await SmtpTalk.open(a.port, { localAddress: "127.0.0.9" });
      t.close();
      return g.code === 220;
    }, 10_000, "A to take 127.0.0.9 again");
  }, 60_000);
});

describe("shared AUTH failures, recipient verification and pregreet passes", () => {
  test("AUTH failures on both nodes add up: the third blocks the client, on both nodes", async () => {
    const dir = tempDir("mailraven-cluster-auth-");
    const cert = selfSigned(dir, "mail.test");
    await Bun.write(join(dir, "c.pem"), cert.cert);
    await Bun.write(join(dir, "c.key"), cert.key);
    const [a, b] = await pair({
      smtp: { shutdown_timeout: "1s" },
      defenses: { connection_rate: 0 },
      submission: { starttls: [], tls: ["127.0.0.1:0"], certificates: [{ cert_file: join(dir, "c.pem"), key_file: join(dir, "c.key") }], auth_failures: { max: 3, window: "10m", block_for: "1h" } },
    });
    const smtps = (r: Relay) => Number(r.logs.find((l) => l.msg === "smtp listening" && l.mode === "smtps")!.port);
    const fail = async (r: Relay) => {
      const talk = await SmtpTalk.connectTls(smtps(r), { localAddress: "127.0.0.13" });
      await talk.reply();
      await talk.send("EHLO client.test");
      const reply = await talk.send(`AUTH PLAIN ${btoa("\0mallory\0guess")}`);
      talk.close();
      return `${reply.code} ${reply.text}`;
    };
    expect(await fail(a)).toBe("535 5.7.8 Authentication credentials invalid");
    expect(await fail(b)).toBe("535 5.7.8 Authentication credentials invalid");
    expect(await fail(a)).toBe("421 4.7.0 Too many failed authentications; try again later");
    // A blocked it; B learns of the block and refuses the client's next connection too.
    expect(await refusedOn(b, "127.0.0.13")).toBe("554 5.7.1 Service unavailable; client [127.0.0.13] is blocked");
  }, 60_000);

  test("a recipient verified by node A is known to node B without a probe of its own", async () => {
    const [a, b] = await pair({ relay: { domains: { "dest.test": { route: sink.route, verify_recipients: true } }, relay_networks: ["10.99.99.0/24"] } });
    expect((await rcpt(a, "dave@dest.test")).code).toBe(250);
    expect(await metric(a, "mailraven_recipient_probes_total", { result: "ok" })).toBe(1);
    await waitFor(async () => (await redis.send("EXISTS", [`t${prefixes - 1}:rv:dave@dest.test`])) || null, 5_000, "the result in redis");
    expect((await rcpt(b, "dave@dest.test")).code).toBe(250);
    expect(await metric(b, "mailraven_recipient_probes_total", { result: "ok" })).toBe(0);
  }, 60_000);

  test("a client that passed the pregreet test on node A is greeted at once on node B", async () => {
    const [a, b] = await pair({ smtp: { greeting_delay: "3s" } });
    const greetedIn = async (r: Relay) => {
      const t0 = performance.now();
      const { talk, greeting } = await SmtpTalk.open(r.port, { localAddress: "127.0.0.14" });
      talk.close();
      expect(greeting.code).toBe(220);
      return performance.now() - t0;
    };
    expect(await greetedIn(a)).toBeGreaterThanOrEqual(2900);
    await waitFor(async () => (await redis.send("EXISTS", [`t${prefixes - 1}:pg:127.0.0.14`])) || null, 5_000, "the pass in redis");
    expect(await greetedIn(b)).toBeLessThan(1500);
  }, 60_000);
});

describe("the cluster's nodes", () => {
  test("/admin/cluster and `mailraven cluster ls` list both live nodes with their queue sizes; a stopped node leaves the list", async () => {
    const [a, b] = await pair();
    await waitFor(async () => {
      const body = (await (await a.admin("GET", "/admin/cluster")).json()) as { nodes: { name: string }[] };
      return body.nodes.length === 2;
    }, 10_000, "both heartbeats");
    const body = (await (await a.admin("GET", "/admin/cluster")).json()) as { enabled: boolean; node: string; redis: string; nodes: { name: string; self: boolean; queue: { messages: number } }[] };
    expect(body).toMatchObject({ enabled: true, node: "a", redis: "up" });
    expect(body.nodes.map((n) => [n.name, n.self, n.queue.messages])).toEqual([["a", true, 0], ["b", false, 0]]);
    const ls = await run([BINARY, "cluster", "ls", "--config", b.cliConfigPath()]);
    expect(ls.code).toBe(0);
    expect(ls.out).toMatch(/^NODE +MESSAGES +RECIPIENTS/);
    expect(ls.out).toMatch(/^b \* +0 +0 /m);
    expect(ls.out).toMatch(/^a +0 +0 /m);
    const json = JSON.parse((await run([BINARY, "cluster", "ls", "--json", "--config", b.cliConfigPath()])).out) as { nodes: unknown[] };
    expect(json.nodes.length).toBe(2);
    expect(await b.stop()).toBe(0);
    const after = (await (await a.admin("GET", "/admin/cluster")).json()) as { nodes: { name: string }[] };
    expect(after.nodes.map((n) => n.name)).toEqual(["a"]);
    // /health says ok while Redis answers.
    expect(await (await a.admin("GET", "/health", null)).json()).toMatchObject({ status: "ok", redis: "up" });
  }, 60_000);
});


