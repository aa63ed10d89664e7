// RFC 2920 3.1 protocol synchronisation, as Postfix's smtpd_forbid_unauth_pipelining enforces
// it: input before the banner, more input after a command that may only end a pipelined
// group, and content sent behind a refused DATA are refused with 554 and the connection is
// closed, so nothing the client pipelined is ever executed. Legitimate pipelining still works.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk, type Reply } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;
/** With the pregreet wait, to test clients remembered by the pregreet cache. */
let delayed: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  // Only 127.0.0.2 is trusted: 127.0.0.1 plays the internet.
  const relayConfig = { domains: { "dest.test": sink.route }, relay_networks: ["127.0.0.2/32"] };
  // Many short sessions from one address: the per-IP connection rate limit is not under test here.
  const defenses = { connection_rate: 0 };
  relay = await Relay.start({ config: { relay: relayConfig, defenses } });
  delayed = await Relay.start({ config: { relay: relayConfig, smtp: { greeting_delay: "400ms" }, defenses } });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, delayed]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

const SMUGGLED = "MAIL FROM:<ceo@dest.test>\r\nRCPT TO:<bob@dest.test>\r\nDATA\r\nSubject: smuggled\r\n\r\npay now\r\n.\r\n";

async function ehlo(port = relay.port, from = "127.0.0.1"): Promise<SmtpTalk> {
  const { talk, greeting } = await SmtpTalk.open(port, { localAddress: from });
  expect(greeting.code).toBe(220);
  expect((await talk.send("EHLO client.test")).code).toBe(250);
  return talk;
}

/** The reply to a synchronisation error, and the connection closed after it. */
async function expectSyncError(talk: SmtpTalk, r?: Reply): Promise<void> {
  const reply = r ?? (await talk.reply());
  expect(reply.code).toBe(554);
  expect(reply.text).toBe("5.5.0 Error: SMTP protocol synchronization");
  await talk.closed;
}

async function metric(r: Relay, after: string): Promise<number> {
  const text = await (await r.admin("GET", "/metrics", null)).text();
  const m = new RegExp(`^mailraven_smtp_sync_violations_total\\{after="${after}"\\} (\\d+)`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** A clean transaction on a fresh connection; resolves once the sink has it. */
async function canary(tag: string): Promise<void> {
  const t = await ehlo();
  const r = await t.transaction("canary@origin.test", ["bob@dest.test"], `Subject: ${tag}\r\n\r\nfine\r\n`);
  expect(r.code).toBe(250);
  t.close();
  await waitFor(() => sink.messages.find((m) => m.raw.toString().includes(`Subject: ${tag}`)), 10_000, `canary ${tag}`);
}

describe("commands that may only end a pipelined group", () => {
  const groupEnders: [string, string[]][] = [
    ["EHLO", []],
    ["HELO", []],
    ["NOOP", []],
    ["VRFY", []],
    ["EXPN", []],
    ["QUIT", []],
    ["STARTTLS", []],
    ["AUTH", []],
    ["DATA", ["MAIL FROM:<a@origin.test>", "RCPT TO:<bob@dest.test>"]],
  ];
  for (const [verb, before] of groupEnders) {
    test(`${verb} followed by more input before its reply: 554 5.5.0, closed, logged and counted`, async () => {
      const counted = await metric(relay, verb);
      const t = await ehlo();
      for (const cmd of before) expect((await t.send(cmd)).code).toBe(250);
      const line = verb === "EHLO" || verb === "HELO" ? `${verb} again.test` : verb === "VRFY" || verb === "EXPN" ? `${verb} bob` : verb === "AUTH" ? "AUTH PLAIN AGJvYgBzZWNyZXQ=" : verb;
      t.write(`${line}\r\nRSET\r\n`);
      await expectSyncError(t);
      const log = await relay.waitForLog((l) => l.msg === "protocol synchronization error" && l.after === verb);
      expect(log).toMatchObject({ client_ip: "127.0.0.1", input: "RSET\\r\\n", code: 554, status: "5.5.0" });
      expect(await metric(relay, verb)).toBe(counted + 1);
    });
  }

  test("an unfinished line counts as input too", async () => {
    const t = await ehlo();
    t.write("NOOP\r\nMAIL FR");
    await expectSyncError(t);
  });

  test("a smuggled transaction behind an EHLO never runs", async () => {
    const t = await SmtpTalk.open(relay.port);
    t.talk.write(`EHLO x.test\r\n${SMUGGLED}`);
    await expectSyncError(t.talk);
    await canary("after-ehlo");
    expect(sink.messages.some((m) => m.raw.toString().includes("smuggled"))).toBe(false);
  });
});

describe("legitimate pipelining (RFC 2920) still works", () => {
  test("MAIL, RCPT, RCPT, DATA in one write; the content, the dot and QUIT in another", async () => {
    const t = await ehlo();
    t.write("MAIL FROM:<pipe@origin.test>\r\nRCPT TO:<bob@dest.test>\r\nRCPT TO:<carol@dest.test>\r\nDATA\r\n");
    expect((await t.reply()).code).toBe(250);
    expect((await t.reply()).code).toBe(250);
    expect((await t.reply()).code).toBe(250);
    expect((await t.reply()).code).toBe(354);
    t.write("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    const queued = await t.reply();
    expect(queued.code).toBe(250);
    expect((await t.reply()).code).toBe(221);
    await t.closed;
    const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: pipelined")), 10_000, "delivery");
    expect(got.to.sort()).toEqual(["bob@dest.test", "carol@dest.test"]);
  });

  test("RSET and a new transaction pipelined after a message", async () => {
    const t = await ehlo();
    expect((await t.transaction("one@origin.test", ["bob@dest.test"], "Subject: one\r\n\r\n1\r\n")).code).toBe(250);
    t.write("RSET\r\nMAIL FROM:<two@origin.test>\r\nRCPT TO:<bob@dest.test>\r\nDATA\r\n");
    for (const code of [250, 250, 250, 354]) expect((await t.reply()).code).toBe(code);
    t.write("Subject: two\r\n\r\n2\r\n.\r\n");
    expect((await t.reply()).code).toBe(250);
    t.close();
  });
});

describe("a DATA that fails never executes what was sent behind it", () => {
  test("pipelined in the same write: 554 5.5.0 at the DATA, closed", async () => {
    const t = await ehlo();
    t.write(`MAIL FROM:<spoof@attacker.test>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n${SMUGGLED}`);
    expect((await t.reply()).code).toBe(250);
    const rcpt = await t.reply();
    expect(rcpt.code).toBe(554);
    expect(rcpt.text).toBe("5.7.1 Relaying denied");
    await expectSyncError(t);
  });

  test("arriving after the refusal: the first line that is not RSET, QUIT, NOOP, HELO or EHLO is content; 554 5.5.0", async () => {
    for (const content of [`From: x@attacker.test\r\n${SMUGGLED}`, SMUGGLED]) {
      const t = await ehlo();
      expect((await t.send("MAIL FROM:<spoof@attacker.test>")).code).toBe(250);
      expect((await t.send("RCPT TO:<victim@elsewhere.test>")).code).toBe(554);
      const data = await t.send("DATA");
      expect(data.code).toBe(554);
      expect(data.text).toBe("5.5.1 Error: no valid recipients");
      t.write(content);
      await expectSyncError(t);
    }
    const log = await relay.waitForLog((l) => l.msg === "protocol synchronization error" && l.after === "refused DATA" && l.input === "MAIL FROM:<ceo@dest.test>");
    expect(log.code).toBe(554);
  });

  test("DATA without MAIL: 503 5.5.1; RSET brings the session back", async () => {
    const t = await ehlo();
    const r = await t.send("DATA");
    expect(r.code).toBe(503);
    expect(r.text).toBe("5.5.1 Error: need MAIL command");
    expect((await t.send("RSET")).code).toBe(250);
    expect((await t.transaction("after@origin.test", ["bob@dest.test"], "Subject: after-rset\r\n\r\nok\r\n")).code).toBe(250);
    t.close();
  });

  test("the canary sent afterwards on a clean connection is delivered, and no smuggled message ever was", async () => {
    await canary("after-failed-data");
    expect(sink.messages.some((m) => m.raw.toString().includes("smuggled"))).toBe(false);
    expect(sink.messages.some((m) => m.from === "ceo@dest.test")).toBe(false);
  });
});

describe("input before the banner", () => {
  /**
   * Writes a whole transaction at connect time; returns the refusal. Seen before the banner:
   * 554 5.5.1 instead of it. A client that races a banner sent at once (trusted clients are
   * not held at all) gets the banner, then 554 5.5.0 at its EHLO: either way no command runs.
   */
  const pregreet = async (port: number, from: string): Promise<Reply> => {
    const talk = await SmtpTalk.connect(port, { localAddress: from });
    talk.write(`EHLO eager.test\r\n${SMUGGLED}`);
    let r = await talk.reply();
    if (r.code === 220) {
      r = await talk.reply();
      expect(r.text).toBe("5.5.0 Error: SMTP protocol synchronization");
    }
    await talk.closed;
    return r;
  };

  test("from an unknown client greeted at once (no pregreet wait): refused with 554 and closed", async () => {
    const r = await pregreet(relay.port, "127.0.0.1");
    expect(r.code).toBe(554);
    expect(r.text).toMatch(/^5\.5\.[01] /);
  });

  test("from a trusted client (relay_networks): refused all the same", async () => {
    const r = await pregreet(relay.port, "127.0.0.2");
    expect(r.code).toBe(554);
    expect(r.text).toMatch(/^5\.5\.[01] /);
  });

  test("a partial line held back until the banner is still seen: 554 5.5.1", async () => {
    const talk = await SmtpTalk.connect(relay.port, { localAddress: "127.0.0.1" });
    talk.write("EHLO eager");
    const r = await talk.reply();
    expect(r.code).toBe(554);
    expect(r.text).toStartWith("5.5.1 ");
    await talk.closed;
    await relay.waitForLog((l) => l.msg === "early talker refused");
  });

  test("from a client remembered by the pregreet cache: refused, and forgotten by the cache", async () => {
    // Passes the pregreet test once (waits for the delayed banner)...
    const polite = await SmtpTalk.open(delayed.port, { localAddress: "127.0.0.7" });
    expect(polite.greeting.code).toBe(220);
    polite.talk.close();
    await polite.talk.closed;
    // ...so it is greeted at once now; talking first is still refused.
    const r = await pregreet(delayed.port, "127.0.0.7");
    expect(r.code).toBe(554);
    expect(r.text).toMatch(/^5\.5\.[01] /);
    // A partial line before the banner is input too.
    const talk = await SmtpTalk.connect(delayed.port, { localAddress: "127.0.0.8" });
    talk.write("EHL");
    const partial = await talk.reply();
    expect(partial.code).toBe(554);
    expect(partial.text).toStartWith("5.5.1 ");
    await talk.closed;
  });

  test("nothing pipelined before a banner reached the queue or the sink", async () => {
    await canary("after-pregreet");
    expect(sink.messages.some((m) => m.raw.toString().includes("smuggled"))).toBe(false);
    // Nothing else is on its way: the queues drain and no accepted message came from the smuggler.
    await waitFor(() => queueCounts(relay.dir).messages === 0 && queueCounts(delayed.dir).messages === 0, 10_000, "empty queues");
    for (const r of [relay, delayed]) expect(r.logs.some((l) => l.msg === "message accepted" && l.from === "ceo@dest.test")).toBe(false);
  });
});
