// What AUTH may cost: password checks (argon2id) run submission.auth_concurrency at a time over
// all clients, and each client (IPv4 address or IPv6 /64) may start submission.auth_rate_limit
// attempts per window. Beyond either: "454 4.7.0", and the password is not looked at.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { selfSigned } from "../helpers/certs.ts";
import { BINARY, Relay, tempDir } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { metric } from "../helpers/observe.ts";

const PASSWORD = "correct horse battery staple";
const relays: Relay[] = [];

async function submissionRelay(submission: Record<string, unknown>): Promise<{ relay: Relay; port: number }> {
  const dir = tempDir("mailraven-authlim-");
  const cert = selfSigned(dir, "mail.test");
  await Bun.write(join(dir, "c.pem"), cert.cert);
  await Bun.write(join(dir, "c.key"), cert.key);
  const relay = await Relay.start({
    dir,
    config: {
      relay: { domains: { "dest.test": "smtp://127.0.0.1:9" }, relay_networks: ["10.99.99.0/24"] },
      smtp: { shutdown_timeout: "1s" },
      defenses: { connection_rate: 0 },
      submission: { starttls: [], tls: ["127.0.0.1:0"], certificates: [{ cert_file: join(dir, "c.pem"), key_file: join(dir, "c.key") }], ...submission },
    },
  });
  relays.push(relay);
  const add = await run([BINARY, "user", "add", "alice", "--identity", "alice@corp.test", "--password-stdin", "--config", relay.configPath], `${PASSWORD}\n`);
  expect(add.code).toBe(0);
  return { relay, port: Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === "smtps")!.port) };
}

/** A TLS session on 465, greeted and past EHLO. */
async function session(port: number, from = "127.0.0.1"): Promise<SmtpTalk> {
  const talk = await SmtpTalk.connectTls(port, { localAddress: from });
  expect((await talk.reply()).code).toBe(220);
  expect((await talk.send("EHLO client.test")).code).toBe(250);
  return talk;
}

const plain = (password: string) => `AUTH PLAIN ${btoa(`\0alice\0${password}`)}`;


afterAll(async () => {
  for (const r of relays) {
    expect(await r.stop()).toBe(0);
    r.cleanup();
  }
}, 30_000);

describe("password checks at once (auth_concurrency)", () => {
  let relay: Relay;
  let port: number;
  beforeAll(async () => {
    ({ relay, port } = await submissionRelay({ auth_concurrency: 1 }));
  }, 30_000);

  test("six AUTHs at the same moment with one slot: the others get 454 4.7.0 at once; then AUTH works again", async () => {
    const talks = await Promise.all(Array.from({ length: 6 }, () => session(port)));
    // All six commands leave before any reply is read: they reach the relay within a few ms,
    // while one argon2id check takes far longer.
    for (const t of talks) t.write(`${plain(PASSWORD)}\r\n`);
    const replies = await Promise.all(talks.map((t) => t.reply()));
    for (const t of talks) t.close();
    const busy = replies.filter((r) => r.code === 454);
    expect(busy.length).toBeGreaterThanOrEqual(1);
    for (const r of busy) expect(r.text).toBe("4.7.0 Temporary authentication failure, try again later");
    expect(replies.filter((r) => r.code === 235).length).toBeGreaterThanOrEqual(1);
    expect(replies.every((r) => r.code === 454 || r.code === 235)).toBe(true);
    expect(await metric(relay, "mailraven_smtp_auth_total", { result: "busy" })).toBe(busy.length);
    // The slots were given back: the next attempt is checked.
    const again = await session(port);
    expect((await again.send(plain(PASSWORD))).code).toBe(235);
    again.close();
  }, 30_000);
});

describe("attempts per client (auth_rate_limit)", () => {
  test("the fourth attempt within the window gets 454 4.7.0 without a check, whatever the password", async () => {
    const { relay, port } = await submissionRelay({ auth_rate_limit: "3/1m", auth_failures: { max: 100, window: "1m", block_for: "1h" } });
    for (let i = 0; i < 3; i++) {
      const t = await session(port);
      expect((await t.send(plain("a wrong password here"))).code).toBe(535);
      t.close();
    }
    const fourth = await session(port);
    const r = await fourth.send(plain(PASSWORD));
    expect(r.code).toBe(454);
    expect(r.text).toBe("4.7.0 Too many authentication attempts, try again later");
    fourth.close();
    expect(await metric(relay, "mailraven_smtp_auth_total", { result: "rate_limited" })).toBe(1);
    // Another client is not affected.
    const other = await session(port, "127.0.0.2");
    expect((await other.send(plain(PASSWORD))).code).toBe(235);
    other.close();
  }, 30_000);
});
