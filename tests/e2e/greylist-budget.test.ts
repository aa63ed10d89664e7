// Greylisting's writes are bounded: new triplets per client network per window
// (defenses.greylist.new_triplets_per_network) and policy.db's size (max_database_size). Past
// either the client is deferred as if greylisted and no row is written; policy.db's size is a
// metric. Rows are counted in policy.db itself, read the way an admin would.

import { afterAll, describe, expect, test } from "bun:test";
import { Relay } from "../helpers/relay.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { metric, policyCount } from "../helpers/observe.ts";

const relays: Relay[] = [];
afterAll(async () => {
  for (const r of relays) {
    expect(await r.stop()).toBe(0);
    r.cleanup();
  }
}, 30_000);

async function relayWith(greylist: Record<string, unknown>): Promise<Relay> {
  const relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": "smtp://127.0.0.1:9" }, relay_networks: ["10.99.99.0/24"] },
      smtp: { shutdown_timeout: "1s" },
      defenses: { connection_rate: 0, greylist },
    },
  });
  relays.push(relay);
  return relay;
}

const greylistRows = (relay: Relay) => policyCount(relay, "SELECT COUNT(*) AS n FROM greylist");


/** One session from `from`: MAIL, then a RCPT per recipient; the replies to the RCPTs. */
async function rcpts(relay: Relay, from: string, recipients: string[]) {
  const { talk } = await SmtpTalk.open(relay.port, { localAddress: from });
  try {
    await talk.send("EHLO client.test");
    expect((await talk.send("MAIL FROM:<sender@origin.test>")).code).toBe(250);
    const out = [];
    for (const r of recipients) out.push(await talk.send(`RCPT TO:<${r}>`));
    return out;
  } finally {
    talk.close();
  }
}

describe("new triplets per client network", () => {
  test("a network's sixth new triplet in the window is deferred unwritten; another network is not affected", async () => {
    const relay = await relayWith({ new_triplets_per_network: "5/1h" });
    const replies = await rcpts(relay, "127.0.0.1", Array.from({ length: 8 }, (_, i) => `user${i}@dest.test`));
    for (const r of replies) {
      expect(r.code).toBe(451);
      expect(r.text).toBe("4.7.1 Greylisted, please try again in 300 seconds");
    }
    expect(greylistRows(relay)).toBe(5);
    expect(await metric(relay, "mailraven_greylist_decisions_total", { decision: "new" })).toBe(5);
    expect(await metric(relay, "mailraven_greylist_decisions_total", { decision: "capped" })).toBe(3);
    // Another /24 has its own share.
    expect((await rcpts(relay, "127.0.1.1", ["user0@dest.test"]))[0]!.code).toBe(451);
    expect(greylistRows(relay)).toBe(6);
  });
});

describe("policy.db ceiling", () => {
  test("past max_database_size no new triplet is written; the size is a metric", async () => {
    // An empty policy.db (its tables and indexes) already holds more than 16 KiB.
    const relay = await relayWith({ max_database_size: "16KiB" });
    const replies = await rcpts(relay, "127.0.0.1", ["a@dest.test", "b@dest.test"]);
    expect(replies.map((r) => r.code)).toEqual([451, 451]);
    expect(greylistRows(relay)).toBe(0);
    expect(await metric(relay, "mailraven_greylist_decisions_total", { decision: "full" })).toBe(2);
    expect(await metric(relay, "mailraven_policy_db_bytes")).toBeGreaterThan(16 * 1024);
  });
});
