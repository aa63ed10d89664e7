// IPv6 clients are limited by their /64 (smtp.ipv6_prefix_length), so a subscriber cannot take
// a fresh address for each attempt. Clients bind to different addresses of one /64 that the
// test adds to `lo` (and removes afterwards): fd00:6409::1, ::2 and ::3 share a prefix,
// fd00:6409:0:1::1 is the neighbouring /64. Root: adding addresses needs it.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { selfSigned } from "../helpers/certs.ts";
import { BINARY, Relay, tempDir } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const ROOT = process.getuid?.() === 0;
const SAME = ["fd00:6409::1", "fd00:6409::2", "fd00:6409::3"] as const;
const NEIGHBOUR = "fd00:6409:0:1::1";
const SERVER = "fd00:6409:0:ff::25";
const added: string[] = [];
const relays: Relay[] = [];

if (!ROOT) console.log("ipv6-prefix.test.ts skipped: adding test addresses to lo needs root");

async function relayWith(config: Record<string, unknown>): Promise<Relay> {
  const smtp = (config.smtp ?? {}) as Record<string, unknown>;
  const relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": "smtp://127.0.0.1:9" }, relay_networks: ["10.99.99.0/24"] },
      ...config,
      smtp: { listen: [`[${SERVER}]:0`], shutdown_timeout: "1s", ...smtp },
    },
  });
  relays.push(relay);
  return relay;
}

const open = (port: number, from: string) => SmtpTalk.open(port, { host: SERVER, localAddress: from });

describe.skipIf(!ROOT)("limits count an IPv6 client's /64 (root: test addresses on lo)", () => {
  beforeAll(async () => {
    for (const a of [...SAME, NEIGHBOUR, SERVER]) {
      // nodad: usable at once, no duplicate address detection wait.
      // Left over from an interrupted run, an address is reused (and removed at the end).
      const r = await run(["ip", "-6", "addr", "add", `${a}/128`, "dev", "lo", "nodad"]);
      if (r.code !== 0 && !/File exists|already assigned/.test(r.err)) throw new Error(`ip -6 addr add ${a}: ${r.err}`);
      added.push(a);
    }
  });
  afterAll(async () => {
    for (const r of relays) {
      await r.stop();
      r.cleanup();
    }
    for (const a of added) await run(["ip", "-6", "addr", "del", `${a}/128`, "dev", "lo"]);
  }, 30_000);

  test("max_connections_per_ip: the third session from one /64 is refused, the neighbouring /64 is not", async () => {
    const relay = await relayWith({ smtp: { max_connections_per_ip: 2 }, defenses: { connection_rate: 0 } });
    const talks: SmtpTalk[] = [];
    const held = async (from: string) => {
      const o = await open(relay.port, from);
      talks.push(o.talk);
      return o.greeting;
    };
    try {
      expect([(await held(SAME[0])).code, (await held(SAME[1])).code]).toEqual([220, 220]);
      const third = await held(SAME[2]);
      expect(third.code).toBe(421);
      expect(third.text).toBe("4.7.0 Too many connections from your IP address, try again later");
      expect((await held(NEIGHBOUR)).code).toBe(220);
    } finally {
      for (const t of talks) t.close();
    }
  });

  test("connection_rate: connections from three addresses of one /64 count as one client's", async () => {
    const relay = await relayWith({ defenses: { connection_rate: 3 } });
    for (const from of SAME) {
      const { talk, greeting } = await open(relay.port, from);
      expect(greeting.code).toBe(220);
      talk.close();
    }
    const fourth = await open(relay.port, SAME[0]);
    expect(fourth.greeting.code).toBe(421);
    expect(fourth.greeting.text).toStartWith("4.7.0 Too many connections from [fd00:6409::1]");
    fourth.talk.close();
    const n = await open(relay.port, NEIGHBOUR);
    expect(n.greeting.code).toBe(220);
    n.talk.close();
  });

  test("rate_limits.per_ip: messages from the /64 share one bucket", async () => {
    const relay = await relayWith({ defenses: { connection_rate: 0, rate_limits: { per_ip: "2/1h", per_sender_domain: "off" } } });
    const mail = async (from: string) => {
      const { talk } = await open(relay.port, from);
      await talk.send("EHLO client.test");
      const r = await talk.send("MAIL FROM:<a@sender.test>");
      talk.close();
      return r;
    };
    expect((await mail(SAME[0])).code).toBe(250);
    expect((await mail(SAME[1])).code).toBe(250);
    const third = await mail(SAME[2]);
    expect(third.code).toBe(450);
    expect(third.text).toStartWith("4.7.1 Rate limit exceeded for [fd00:6409::3]");
    expect((await mail(NEIGHBOUR)).code).toBe(250);
  });

  test("the pregreet cache: once one address of the /64 waited for the banner, the others are greeted at once", async () => {
    // A 5 s delay: a banner within 2.5 s can only be the cached pass.
    const relay = await relayWith({ smtp: { greeting_delay: "5s" }, defenses: { connection_rate: 0 } });
    const first = await open(relay.port, SAME[0]);
    expect(first.greeting.code).toBe(220);
    first.talk.close();
    const sibling = await SmtpTalk.connect(relay.port, { host: SERVER, localAddress: SAME[1] });
    expect((await sibling.reply(2500)).code).toBe(220);
    sibling.close();
    const neighbour = await SmtpTalk.connect(relay.port, { host: SERVER, localAddress: NEIGHBOUR });
    await expect(neighbour.reply(2500)).rejects.toThrow("no reply within 2500 ms");
    neighbour.close();
  }, 20_000);

  test("AUTH failures from two addresses block the whole /64 on every listener; the neighbour still connects", async () => {
    const dir = tempDir("mailraven-v6auth-");
    const cert = selfSigned(dir, "mail.test");
    await Bun.write(join(dir, "c.pem"), cert.cert);
    await Bun.write(join(dir, "c.key"), cert.key);
    const relay = await relayWith({
      defenses: { connection_rate: 0 },
      submission: { starttls: [], tls: [`[${SERVER}]:0`], certificates: [{ cert_file: join(dir, "c.pem"), key_file: join(dir, "c.key") }], auth_failures: { max: 2, window: "1m", block_for: "1h" } },
    });
    const add = await run([BINARY, "user", "add", "alice", "--identity", "alice@corp.test", "--password-stdin", "--config", relay.configPath], "correct horse battery staple\n");
    expect(add.code).toBe(0);
    const port465 = Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === "smtps")!.port);
    const wrong = async (from: string) => {
      const talk = await SmtpTalk.connectTls(port465, { host: SERVER, localAddress: from });
      expect((await talk.reply()).code).toBe(220);
      await talk.send("EHLO client.test");
      const r = await talk.send(`AUTH PLAIN ${btoa("\0alice\0not the password at all")}`);
      talk.close();
      return r;
    };
    expect((await wrong(SAME[0])).code).toBe(535);
    const second = await wrong(SAME[1]);
    expect(second.code).toBe(421);
    expect(second.text).toBe("4.7.0 Too many failed authentications; try again later");
    await relay.waitForLog((l) => l.msg === "client blocked after authentication failures" && l.client === "fd00:6409::/64");
    const blocked = await open(relay.port, SAME[2]);
    expect(blocked.greeting.code).toBe(554);
    expect(blocked.greeting.text).toBe("5.7.1 Service unavailable; client [fd00:6409::3] is blocked");
    blocked.talk.close();
    const n = await open(relay.port, NEIGHBOUR);
    expect(n.greeting.code).toBe(220);
    n.talk.close();
  }, 30_000);
});
