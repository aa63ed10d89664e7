// Redis trouble never loses or holds up mail: two relays sharing a real redis-server take 250
// messages while Redis is killed, started again, then paused (SIGSTOP: it accepts connections
// and never answers) and resumed. Every message reaches the sink, no reply waits for Redis
// beyond cluster.timeout, each node logs every change of state once, counts its fallbacks,
// reports itself degraded on /health, and goes back to Redis without a restart.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { metric } from "../helpers/observe.ts";
import { RedisServer } from "../helpers/redis.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const TOTAL = 250;
const CONCURRENCY = 6;
const PREFIX = "outage:";
let redis: RedisServer;
let sink: Sink;
let nodes: Relay[] = [];

beforeAll(async () => {
  redis = await RedisServer.start();
  sink = await Sink.start();
  const start = (name: string) =>
    Relay.start({
      config: {
        relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
        // Every limit is checked in Redis on every message, and never reached.
        defenses: { rate_limits: { per_ip: "100000/1h", per_sender_domain: "100000/1h" }, connection_rate: 100_000 },
        smtp: { max_connections_per_ip: 1000 },
        cluster: { enabled: true, redis: redis.url, key_prefix: PREFIX, node_name: name, timeout: "250ms", refresh_interval: "1s", heartbeat: "1s" },
      },
    });
  nodes = await Promise.all([start("a"), start("b")]);
}, 60_000);

afterAll(async () => {
  await Promise.all(nodes.map(async (r) => (expect(await r.stop()).toBe(0), r.cleanup())));
  await sink.close();
  await redis.stop();
});

/** One message on a fresh connection; the slowest reply before DATA (greeting, EHLO, MAIL, RCPT) and the final code. */
async function send(i: number): Promise<{ code: number; slowestMs: number }> {
  const node = nodes[i % 2]!;
  let slowest = 0;
  const timed = async <T>(p: () => Promise<T>) => {
    const t0 = performance.now();
    const v = await p();
    slowest = Math.max(slowest, performance.now() - t0);
    return v;
  };
  const { talk, greeting } = await timed(() => SmtpTalk.open(node.port, { localAddress: `127.0.0.${10 + (i % 20)}` }));
  try {
    expect(greeting.code).toBe(220);
    await timed(() => talk.send("EHLO sender.test"));
    const mail = await timed(() => talk.send(`MAIL FROM:<load${i}@sender${i % 7}.test>`));
    expect(`${mail.code} ${mail.text}`).toStartWith("250");
    const rcpt = await timed(() => talk.send("RCPT TO:<bob@dest.test>"));
    expect(rcpt.code).toBe(250);
    expect((await talk.send("DATA")).code).toBe(354);
    talk.write(`Subject: outage ${i}\r\n\r\nmessage ${i}\r\n.\r\n`);
    return { code: (await talk.reply()).code, slowestMs: slowest };
  } finally {
    talk.close();
  }
}

const unreachable = (r: Relay) => r.count("redis unreachable; this node uses its own state until it answers");
const reachable = (r: Relay) => r.count("redis reachable again; shared state in use");

test("Redis killed, restarted, paused and resumed under load: all 250 messages arrive, replies stay within the timeout, fallbacks counted, recovery without a restart", async () => {
  let accepted = 0;
  const results: { code: number; slowestMs: number }[] = [];
  let next = 0;
  // The load runs up to `limit`; the steps below raise it, so each outage meets messages in flight.
  let limit = 80;
  const worker = async () => {
    while (next < TOTAL) {
      if (next >= limit) {
        await Bun.sleep(5);
        continue;
      }
      const r = await send(next++);
      results.push(r);
      if (r.code === 250) accepted++;
    }
  };
  const load = Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const reached = (n: number, what: string) => waitFor(() => accepted >= n || null, 60_000, what);

  await reached(50, "50 messages with redis up");
  await redis.kill();
  // Both nodes notice (the closed connection, or a refused command), and say so once.
  await waitFor(() => nodes.every((n) => unreachable(n) === 1), 15_000, "both nodes to notice redis is gone");
  const health = await nodes[0]!.admin("GET", "/health", null);
  // Still taking mail: 200, so a balancer's health check does not take every node out at once.
  expect(health.status).toBe(200);
  expect(await health.json()).toMatchObject({ status: "ok", redis: "down", degraded: true });
  expect(await metric(nodes[1]!, "mailraven_redis_degraded")).toBe(1);
  limit = 130;
  await reached(130, "130 messages, on the nodes' own state");

  await redis.restart();
  await waitFor(() => nodes.every((n) => reachable(n) === 1), 15_000, "both nodes back on redis");
  expect(await (await nodes[0]!.admin("GET", "/health", null)).json()).toMatchObject({ status: "ok", redis: "up", degraded: false });
  limit = 180;
  await reached(160, "160 messages");
  // A hung Redis: connections stay open, nothing answers. Replies must not wait for it.
  redis.pause();
  await waitFor(() => nodes.every((n) => unreachable(n) === 2), 15_000, "both nodes to give up on the paused redis");
  limit = 230;
  await reached(210, "210 messages");
  redis.resume();
  await waitFor(() => nodes.every((n) => reachable(n) === 2), 15_000, "both nodes back on the resumed redis");
  limit = TOTAL;
  await load;
  expect(results.length).toBe(TOTAL);
  expect(results.filter((r) => r.code !== 250)).toEqual([]);
  // Every message reached the next hop, each exactly once.
  await waitFor(() => sink.messages.filter((m) => m.raw.toString().includes("Subject: outage ")).length >= TOTAL, 60_000, "all 250 messages at the sink");
  const subjects = new Set(sink.messages.map((m) => /Subject: outage (\d+)/.exec(m.raw.toString())?.[1]).filter(Boolean));
  expect(subjects.size).toBe(TOTAL);
  // No reply waited for Redis beyond its 250 ms timeout (plus this busy machine's scheduling).
  const slowest = Math.max(...results.map((r) => r.slowestMs));
  console.log(`cluster-outage: slowest reply before DATA ${slowest.toFixed(0)} ms`);
  expect(slowest).toBeLessThan(2000);
  for (const n of nodes) {
    expect(unreachable(n)).toBe(2);
    expect(reachable(n)).toBe(2);
    expect(await metric(n, "mailraven_redis_outages_total")).toBe(2);
    expect(await metric(n, "mailraven_redis_fallbacks_total", { check: "rate_limits" })).toBeGreaterThan(0);
    expect(await metric(n, "mailraven_redis_fallbacks_total", { check: "connection_rate" })).toBeGreaterThan(0);
    expect(await metric(n, "mailraven_redis_degraded")).toBe(0);
  }
  // After recovery the buckets are in Redis again (the restarted one started empty).
  expect(((await redis.send("KEYS", [`${PREFIX}rl:*`])) as string[]).length).toBeGreaterThan(0);
}, 180_000);
