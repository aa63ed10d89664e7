// Recipient validation at RCPT through the compiled relay: static lists (inline, a file reloaded
// on SIGHUP, "@domain"), and address verification against real next hops (an SMTP sink and an
// LMTP sink that know some users): unknown recipients get 550 5.1.1 at RCPT, so nothing that
// would bounce is accepted; a cached answer costs no second probe (counted at the sink); an
// unreachable next hop gives 450 4.1.1 (or, by setting, acceptance); probes per next hop are
// rate-bound; greylisting writes nothing for unknown recipients.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { Relay, tempDir } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk, type Reply } from "../helpers/smtp-talk.ts";
import { metric, policyCount } from "../helpers/observe.ts";

const KNOWN = new Set(["alice@smtp.test", "alice@lmtp.test", "bob@smtp.test"]);
/** RCPTs each next hop saw, by address (probes included). */
const seen = new Map<string, number>();
const knowsOnly = (address: string) => {
  seen.set(address.toLowerCase(), (seen.get(address.toLowerCase()) ?? 0) + 1);
  return KNOWN.has(address.toLowerCase()) ? undefined : { code: 550, message: "5.1.1 User unknown" };
};

let smtpHop: Sink;
let lmtpHop: Sink;
let listFile: string;
const relays: Relay[] = [];

beforeAll(async () => {
  // A greeting behaviour makes the sinks count connections.
  smtpHop = await Sink.start({ rcpt: knowsOnly, greeting: () => undefined });
  lmtpHop = await Sink.start({ rcpt: knowsOnly, lmtp: () => undefined, greeting: () => undefined });
  listFile = join(tempDir("mailraven-rcptlist-"), "file.test.txt");
  writeFileSync(listFile, "# users of file.test\ncarol@file.test\n\n");
});
afterAll(async () => {
  for (const r of relays) {
    expect(await r.stop()).toBe(0);
    r.cleanup();
  }
  await smtpHop.close();
  await lmtpHop.close();
}, 30_000);

async function relayWith(relay: Record<string, unknown>, more: Record<string, unknown> = {}): Promise<Relay> {
  const r = await Relay.start({ config: { relay: { relay_networks: ["10.99.99.0/24"], ...relay }, smtp: { shutdown_timeout: "1s" }, defenses: { connection_rate: 0 }, ...more } });
  relays.push(r);
  return r;
}

/** One session: MAIL from a forged-looking sender, then RCPT for each address; the RCPT replies. */
async function rcpts(relay: Relay, recipients: string[]): Promise<Reply[]> {
  const { talk } = await SmtpTalk.open(relay.port);
  try {
    await talk.send("EHLO client.test");
    expect((await talk.send("MAIL FROM:<victim@elsewhere.test>")).code).toBe(250);
    const out: Reply[] = [];
    for (const r of recipients) out.push(await talk.send(`RCPT TO:<${r}>`));
    return out;
  } finally {
    talk.close();
  }
}
const one = async (relay: Relay, rcpt: string) => (await rcpts(relay, [rcpt]))[0]!;



describe("static lists", () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await relayWith({
      domains: {
        "list.test": { route: smtpHop.route, recipients: ["alice@list.test", "Postmaster@list.test"] },
        "file.test": { route: smtpHop.route, recipients_file: listFile },
        "any.test": { route: smtpHop.route, recipients: ["@any.test"] },
        "open.test": smtpHop.route,
      },
    });
  });

  test("a listed address is accepted (in any case); another gets 550 5.1.1 at RCPT", async () => {
    const [alice, upper, postmaster, eve] = await rcpts(relay, ["alice@list.test", "ALICE@List.Test", "postmaster@list.test", "eve@list.test"]);
    expect([alice!.code, upper!.code, postmaster!.code]).toEqual([250, 250, 250]);
    expect(eve!.code).toBe(550);
    expect(eve!.text).toBe("5.1.1 <eve@list.test>: Recipient address rejected: User unknown in relay recipient table");
  });

  test("@domain accepts every address of the domain; a domain without a list accepts any", async () => {
    expect((await one(relay, "whoever@any.test")).code).toBe(250);
    expect((await one(relay, "whoever@open.test")).code).toBe(250);
  });

  test("recipients_file is read again on SIGHUP", async () => {
    expect((await one(relay, "carol@file.test")).code).toBe(250);
    expect((await one(relay, "dave@file.test")).code).toBe(550);
    writeFileSync(listFile, "carol@file.test\ndave@file.test # added\n");
    const reloaded = relay.count("configuration reloaded");
    relay.proc.kill("SIGHUP");
    await relay.waitForLog((l) => l.msg === "configuration reloaded" && relay.count("configuration reloaded") > reloaded);
    expect((await one(relay, "dave@file.test")).code).toBe(250);
  });

  test("nothing of this reached a next hop: the lists answer alone", () => {
    expect(seen.size).toBe(0);
  });
});

describe("address verification against the next hop", () => {
  let relay: Relay;
  beforeAll(async () => {
    seen.clear();
    relay = await relayWith({
      domains: {
        "smtp.test": { route: smtpHop.route, verify_recipients: true },
        "lmtp.test": { route: lmtpHop.route, verify_recipients: true },
        "down.test": { route: "smtp://127.0.0.1:9", verify_recipients: true },
      },
      recipient_verification: { timeout: "3s", wait: "5s" },
    });
  });

  test.each([
    ["SMTP", "smtp.test"],
    ["LMTP", "lmtp.test"],
  ])("%s next hop: a known user is accepted, an unknown one gets 550 5.1.1 at RCPT; no message is sent", async (_kind, domain) => {
    const before = (domain === "smtp.test" ? smtpHop : lmtpHop).connectionCount;
    const [alice, eve] = await rcpts(relay, [`alice@${domain}`, `eve@${domain}`]);
    expect(alice!.code).toBe(250);
    expect(eve!.code).toBe(550);
    expect(eve!.text).toBe(`5.1.1 <eve@${domain}>: Recipient address rejected: User unknown`);
    const hop = domain === "smtp.test" ? smtpHop : lmtpHop;
    expect(hop.connectionCount).toBe(before + 2);
    expect(hop.messages).toHaveLength(0);
    expect(seen.get(`eve@${domain}`)).toBe(1);
  });

  test("the answers are cached in policy.db: asking again makes no probe", async () => {
    const connections = smtpHop.connectionCount;
    const [alice, eve] = await rcpts(relay, ["alice@smtp.test", "Eve@smtp.test"]);
    expect(alice!.code).toBe(250);
    expect(eve!.code).toBe(550);
    expect(smtpHop.connectionCount).toBe(connections);
    expect(seen.get("alice@smtp.test")).toBe(1);
    expect(seen.get("eve@smtp.test")).toBe(1);
    expect(policyCount(relay, "SELECT COUNT(*) AS n FROM recipient_verify WHERE status = 'unknown'")).toBe(2);
    expect(policyCount(relay, "SELECT COUNT(*) AS n FROM recipient_verify WHERE status = 'ok' AND expires_at - checked_at = 31 * 86400000")).toBe(2);
    expect(await metric(relay, "mailraven_recipient_probes_total", { result: "unknown" })).toBe(2);
  });

  test("an unreachable next hop: 450 4.1.1, nothing cached", async () => {
    const r = await one(relay, "someone@down.test");
    expect(r.code).toBe(450);
    expect(r.text).toBe("4.1.1 <someone@down.test>: Recipient address rejected: unverified address: the next hop could not be asked, try again later");
    expect(policyCount(relay, "SELECT COUNT(*) AS n FROM recipient_verify WHERE address = 'someone@down.test'")).toBe(0);
  });

  test("a whole message to a known and an unknown recipient: only the known one is queued and delivered", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    expect((await talk.send("MAIL FROM:<victim@elsewhere.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<bob@smtp.test>")).code).toBe(250);
    expect((await talk.send("RCPT TO:<mallory@smtp.test>")).code).toBe(550);
    expect((await talk.send("DATA")).code).toBe(354);
    talk.write("Subject: probe\r\n\r\nhello\r\n.\r\n");
    expect((await talk.reply()).code).toBe(250);
    talk.close();
    await relay.waitForLog((l) => l.msg === "delivery attempt" && l.delivered === 1);
    expect(smtpHop.messages.map((m) => m.to)).toEqual([["bob@smtp.test"]]);
  });
});

describe("settings", () => {
  test("unreachable: accept takes the recipient when the next hop cannot be asked", async () => {
    const relay = await relayWith({ domains: { "down.test": { route: "smtp://127.0.0.1:9", verify_recipients: true } }, recipient_verification: { unreachable: "accept" } });
    expect((await one(relay, "someone@down.test")).code).toBe(250);
  });

  test("probes_per_hop: past the rate no probe is made and the client is deferred", async () => {
    const relay = await relayWith({ domains: { "smtp.test": { route: smtpHop.route, verify_recipients: true } }, recipient_verification: { probes_per_hop: "2/1h" } });
    const connections = smtpHop.connectionCount;
    const replies = await rcpts(relay, ["x1@smtp.test", "x2@smtp.test", "x3@smtp.test"]);
    expect(replies.map((r) => r.code)).toEqual([550, 550, 450]);
    expect(replies[2]!.text).toStartWith("4.1.1 <x3@smtp.test>: Recipient address rejected: unverified address");
    expect(smtpHop.connectionCount).toBe(connections + 2);
    expect(await metric(relay, "mailraven_recipient_probes_total", { result: "rate_limited" })).toBe(1);
  });

  test("a route with ?tls=required is probed under that policy: a next hop without STARTTLS is never asked in clear text", async () => {
    const relay = await relayWith({ domains: { "smtp.test": { route: `${smtpHop.route}?tls=required`, verify_recipients: true } } });
    const asked = seen.get("bob@smtp.test") ?? 0;
    const reply = await one(relay, "bob@smtp.test");
    expect(reply.code).toBe(450);
    expect(reply.text).toStartWith("4.1.1 <bob@smtp.test>: Recipient address rejected");
    expect(seen.get("bob@smtp.test") ?? 0).toBe(asked);
    expect(await metric(relay, "mailraven_recipient_probes_total", { result: "tempfail" })).toBe(1);
  });

  test("greylisting runs after validation: an unknown recipient gets 550 and writes no triplet", async () => {
    const relay = await relayWith({ domains: { "list.test": { route: smtpHop.route, recipients: ["alice@list.test"] } } }, { defenses: { connection_rate: 0, greylist: {} } });
    const [unknown, known] = await rcpts(relay, ["nobody@list.test", "alice@list.test"]);
    expect(unknown!.code).toBe(550);
    expect(known!.code).toBe(451);
    expect(policyCount(relay, "SELECT COUNT(*) AS n FROM greylist")).toBe(1);
  });
});
