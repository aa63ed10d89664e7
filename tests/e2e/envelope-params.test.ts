// Strict envelopes, as Postfix's strict_rfc821_envelopes and strict_smtputf8 would have them:
// only the parameters of extensions we advertise, with valid values; paths that are well
// quoted, valid UTF-8 and ASCII unless SMTPUTF8 was asked for; the domainless postmaster
// accepted; and the address passed on is the one the relay policy checked.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;
/** Routes to a closed port: what it accepts stays in the queue, where the stored envelope can be read. */
let holding: Relay;

beforeAll(async () => {
  sink = await Sink.start();
  // Only 127.0.0.2 is trusted: 127.0.0.1 plays the internet.
  // Many short sessions from one address: the per-IP connection rate limit is not under test here.
  const defenses = { connection_rate: 0 };
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route, "other.test": sink.route }, relay_networks: ["127.0.0.2/32"] }, defenses } });
  holding = await Relay.start({ config: { relay: { domains: { "xn--bcher-kva.test": "smtp://127.0.0.1:1" }, relay_networks: ["127.0.0.2/32"] }, queue: { retry_schedule: ["1h"] }, defenses } });
}, 60_000);
afterAll(async () => {
  for (const r of [relay, holding]) {
    await r.stop();
    r.cleanup();
  }
  await sink.close();
}, 60_000);

async function session(port = relay.port): Promise<SmtpTalk> {
  const { talk, greeting } = await SmtpTalk.open(port);
  expect(greeting.code).toBe(220);
  expect((await talk.send("EHLO client.test")).code).toBe(250);
  return talk;
}

/** Sends raw bytes as one command line and returns the reply. */
async function raw(talk: SmtpTalk, bytes: number[] | string): Promise<{ code: number; text: string }> {
  talk.write(Buffer.concat([typeof bytes === "string" ? Buffer.from(bytes, "latin1") : Buffer.from(bytes), Buffer.from("\r\n")]));
  return talk.reply();
}

const path = (prefix: string, middle: number[], suffix: string) => [...Buffer.from(prefix), ...middle, ...Buffer.from(suffix)];

describe("MAIL FROM parameters", () => {
  const cases: [string, number, string][] = [
    ["MAIL FROM:<a@origin.test> XJUNK=1", 555, "5.5.4 Unsupported parameter XJUNK"],
    ["MAIL FROM:<a@origin.test> REQUIRETLS", 555, "5.5.4 Unsupported parameter REQUIRETLS"],
    ["MAIL FROM:<a@origin.test> AUTH=<>", 555, "5.5.4 Unsupported parameter AUTH"],
    ["MAIL FROM:<a@origin.test> RET=NOPE", 501, "5.5.4 Bad RET parameter: FULL or HDRS"],
    ["MAIL FROM:<a@origin.test> BODY=BINARYMIME", 501, "5.5.4 Bad BODY parameter: 7BIT or 8BITMIME"],
    ["MAIL FROM:<a@origin.test> SIZE=lots", 501, "5.5.4 Bad message size syntax"],
    ["MAIL FROM:<a@origin.test> SMTPUTF8=yes", 501, "5.5.4 SMTPUTF8 takes no value"],
    ["MAIL FROM:<a@origin.test> ENVID=a+zz", 501, "5.5.4 Bad ENVID parameter syntax"],
    ["MAIL FROM:<a@origin.test> RET=FULL RET=HDRS", 501, "5.5.4 Duplicate RET parameter"],
    ["MAIL FROM:<a@origin.test> SIZE=999999999999", 552, "5.3.4 Message size exceeds fixed limit of 26214400 bytes"],
  ];
  for (const [line, code, text] of cases) {
    test(`${line} -> ${code} ${text.slice(0, 5)}`, async () => {
      const t = await session();
      const r = await t.send(line);
      expect(r.code).toBe(code);
      expect(r.text).toBe(text);
      // Refused, not half-applied: a clean MAIL FROM is taken next.
      expect((await t.send("MAIL FROM:<a@origin.test>")).code).toBe(250);
      t.close();
    });
  }

  test("every advertised parameter with a valid value is accepted", async () => {
    const t = await session();
    const r = await t.send("MAIL FROM:<a@origin.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1");
    expect(r.code).toBe(250);
    expect((await t.send("RCPT TO:<bob@dest.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+40dest.test")).code).toBe(250);
    t.close();
  });

  test("REQUIRETLS is not advertised (we do not enforce it on the way out); CHUNKING, DSN, SMTPUTF8 are", async () => {
    const { talk } = await SmtpTalk.open(relay.port);
    const ehlo = await talk.send("EHLO client.test");
    const keywords = ehlo.lines.map((l) => l.slice(4));
    expect(keywords).not.toContain("REQUIRETLS");
    for (const k of ["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "CHUNKING", "ENHANCEDSTATUSCODES"]) expect(keywords).toContain(k);
    talk.close();
  });
});

describe("RCPT TO parameters", () => {
  const cases: [string, number, string][] = [
    ["RCPT TO:<bob@dest.test> XJUNK", 555, "5.5.4 Unsupported parameter XJUNK"],
    ["RCPT TO:<bob@dest.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4 Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE and DELAY separated by commas"],
    ["RCPT TO:<bob@dest.test> NOTIFY=SOMETIMES", 501, "5.5.4 Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE and DELAY separated by commas"],
    ["RCPT TO:<bob@dest.test> ORCPT=bob@dest.test", 501, "5.5.4 Bad ORCPT parameter syntax"],
    ["RCPT TO:<bob@dest.test> ORCPT=rfc822;bob+zzdest.test", 501, "5.5.4 Bad ORCPT parameter syntax"],
  ];
  for (const [line, code, text] of cases) {
    test(`${line} -> ${code}`, async () => {
      const t = await session();
      expect((await t.send("MAIL FROM:<a@origin.test>")).code).toBe(250);
      const r = await t.send(line);
      expect(r.code).toBe(code);
      expect(r.text).toBe(text);
      t.close();
    });
  }
});

describe("paths: 553 5.6.7", () => {
  const bad: [string, number[] | string, boolean, string][] = [
    ["an unterminated quote (MAIL)", 'MAIL FROM:<"ceo@origin.test>', false, "Bad address syntax: unterminated or misplaced quote"],
    ["an unterminated quote (RCPT)", 'RCPT TO:<"bob@dest.test>', false, "Bad address syntax: unterminated or misplaced quote"],
    ["a quoted string that is not the whole local part", 'RCPT TO:<"bob"x@dest.test>', false, "Bad address syntax: unterminated or misplaced quote"],
    ["an empty local part", "RCPT TO:<@dest.test>", false, "Bad address syntax: empty local part"],
    ["an overlong form", path("RCPT TO:<b", [0xc0, 0xaf], "b@dest.test>"), true, "Address is not valid UTF-8"],
    ["a surrogate", path("RCPT TO:<b", [0xed, 0xa0, 0x80], "b@dest.test>"), true, "Address is not valid UTF-8"],
    ["a code point above U+10FFFF", path("RCPT TO:<b", [0xf4, 0x90, 0x80, 0x80], "b@dest.test>"), true, "Address is not valid UTF-8"],
    ["a truncated sequence", path("RCPT TO:<b", [0xe2, 0x82], "@dest.test>"), true, "Address is not valid UTF-8"],
    ["invalid UTF-8 without SMTPUTF8", path("RCPT TO:<b", [0xe2, 0x82], "@dest.test>"), false, "Address is not valid UTF-8"],
    ["non-ASCII without SMTPUTF8", path("RCPT TO:<j", [0xc3, 0xb6], "rg@dest.test>"), false, "Non-ASCII address needs SMTPUTF8"],
    ["a non-ASCII sender without SMTPUTF8", path("MAIL FROM:<j", [0xc3, 0xb6], "rg@origin.test>"), false, "Non-ASCII address needs SMTPUTF8"],
    ["an invalid UTF-8 sender", path("MAIL FROM:<j", [0xc3], "rg@origin.test> SMTPUTF8"), true, "Address is not valid UTF-8"],
  ];
  for (const [name, line, smtputf8, text] of bad) {
    test(name, async () => {
      const t = await session();
      const isMail = (typeof line === "string" ? line : Buffer.from(line).toString("latin1")).startsWith("MAIL");
      if (!isMail) expect((await t.send(`MAIL FROM:<a@origin.test>${smtputf8 ? " SMTPUTF8" : ""}`)).code).toBe(250);
      const r = await raw(t, line);
      expect(r.code).toBe(553);
      expect(r.text).toBe(`5.6.7 ${text}`);
      t.close();
    });
  }

  test("valid UTF-8 with SMTPUTF8 is accepted, and delivered", async () => {
    const t = await session();
    expect((await raw(t, path("MAIL FROM:<j", [0xc3, 0xb6], "rg@origin.test> SMTPUTF8"))).code).toBe(250);
    expect((await raw(t, path("RCPT TO:<j", [0xc3, 0xb6], "rg@dest.test>"))).code).toBe(250);
    const data = await t.send("DATA");
    expect(data.code).toBe(354);
    t.write("Subject: utf8\r\n\r\nhi\r\n.\r\n");
    expect((await t.reply()).code).toBe(250);
    t.close();
    const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: utf8")), 10_000, "delivery");
    expect(got.to).toEqual(["jörg@dest.test"]);
  });
});

describe("RCPT TO:<postmaster> (RFC 5321 4.5.1)", () => {
  test("accepted from anyone without a domain, and delivered to postmaster of the first relay domain", async () => {
    const t = await session();
    expect((await t.send("MAIL FROM:<someone@origin.test>")).code).toBe(250);
    const r = await t.send("RCPT TO:<Postmaster>").catch((e) => { console.log(relay.logs.slice(-12).map((l) => JSON.stringify(l)).join("\n")); throw e; });
    expect(r.code).toBe(250);
    const data = await t.send("DATA");
    expect(data.code).toBe(354);
    t.write("Subject: to the postmaster\r\n\r\nhello\r\n.\r\n");
    expect((await t.reply()).code).toBe(250);
    t.close();
    const got = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes("Subject: to the postmaster")), 10_000, "delivery");
    expect(got.to).toEqual(["postmaster@dest.test"]);
  });
});

describe("the address passed on is the one the relay policy checked", () => {
  const queued = () => {
    const db = new Database(join(holding.dir, "state", "queue.db"), { readonly: true });
    try {
      return db.query<{ sender: string; address: string }, []>("SELECT m.sender, r.address FROM recipients r JOIN messages m ON m.id = r.message_id ORDER BY r.id").all();
    } finally {
      db.close();
    }
  };

  test("an IDN domain, in A-labels or (with SMTPUTF8) in Unicode, is queued in the ASCII form that was routed", async () => {
    const t = await session(holding.port);
    // smtp-server turns every A-label into Unicode; what goes on must be what was matched.
    expect((await t.transaction("a@xn--bcher-kva.test", ["bob@xn--bcher-kva.test"], "Subject: idn 1\r\n\r\nx\r\n")).code).toBe(250);
    expect((await raw(t, path("MAIL FROM:<a@b", [0xc3, 0xbc], "cher.test> SMTPUTF8"))).code).toBe(250);
    expect((await raw(t, path("RCPT TO:<carol@b", [0xc3, 0xbc], "cher.test>"))).code).toBe(250);
    expect((await t.send("DATA")).code).toBe(354);
    t.write("Subject: idn 2\r\n\r\nx\r\n.\r\n");
    expect((await t.reply()).code).toBe(250);
    t.close();
    expect(queued()).toEqual([
      { sender: "a@xn--bcher-kva.test", address: "bob@xn--bcher-kva.test" },
      { sender: "a@xn--bcher-kva.test", address: "carol@xn--bcher-kva.test" },
    ]);
  });
});
