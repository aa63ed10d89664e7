// The content stage through the compiled relay: sender authentication writes one
// Authentication-Results header and removes forged ones, DMARC p=reject is enforced, and the
// virus and spam scanners (real clamd and spamd) refuse what they should.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import { DnsServer } from "../helpers/dns.ts";
import { Relay, waitFor } from "../helpers/relay.ts";
import { ClamdServer, EICAR, GTUBE, SpamdServer } from "../helpers/scanners.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const keys = generateKeyPairSync("rsa", { modulusLength: 2048 });
const publicKey = (keys.publicKey.export({ type: "spki", format: "der" }) as Buffer).toString("base64");
const privateKey = keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string;

let dns: DnsServer;
let sink: Sink;
let clamd: ClamdServer;
let spamd: SpamdServer;
let relay: Relay;

beforeAll(async () => {
  [dns, sink, clamd, spamd] = await Promise.all([
    DnsServer.start({
      txt: {
        "origin.test": ["v=spf1 ip4:127.0.0.0/8 -all"],
        "sel._domainkey.origin.test": [`v=DKIM1; k=rsa; p=${publicKey}`],
        "_dmarc.origin.test": ["v=DMARC1; p=reject"],
        "spoofed.test": ["v=spf1 ip4:192.0.2.1 -all"],
        "_dmarc.spoofed.test": ["v=DMARC1; p=reject"],
      },
    }),
    Sink.start(),
    ClamdServer.start({ streamMaxLength: "26M" }),
    SpamdServer.start(),
  ]);
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
      dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
      defenses: {
        authentication: { authserv_id: "relay.test" },
        clamd: { address: `127.0.0.1:${clamd.port}`, timeout: "10s" },
        spamd: { address: `127.0.0.1:${spamd.port}`, timeout: "20s", tag_score: 5, reject_score: 10 },
      },
    },
  });
}, 120_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([sink.close(), dns.stop(), clamd.stop(), spamd.stop()]);
}, 60_000);

async function send(from: string, body: string) {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO mail.origin.test");
  const r = await talk.transaction(from, ["bob@dest.test"], body);
  talk.close();
  return r;
}

const message = (from: string, subject: string, extra = "") =>
  `From: ${from}\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@origin.test>\r\nDate: Sat, 21 Nov 2026 08:00:00 +0000\r\n${extra}\r\nHello Bob,\r\nlunch at noon?\r\n`;

describe("sender authentication", () => {
  test("signed, aligned mail: one Authentication-Results of ours on top, the forged one gone, others kept", async () => {
    const forged = "Authentication-Results: relay.test; dkim=pass header.d=bank.test; spf=pass\r\nAuthentication-Results: other.example; spf=none\r\n";
    const raw = message("alice@origin.test", "signed mail", forged);
    const signed = await dkimSign(raw, { signatureData: [{ signingDomain: "origin.test", selector: "sel", privateKey }] } as Parameters<typeof dkimSign>[1]);
    const r = await send("alice@origin.test", signed.signatures + raw);
    expect(r.code).toBe(250);
    const got = await waitFor(() => sink.messages.find((m) => m.raw.includes("signedmail@origin.test")), 10_000, "delivery");
    const head = got.raw.toString("latin1").split("\r\n\r\n")[0]!;
    const ours = head.split(/\r\n(?![ \t])/).filter((h) => /^Authentication-Results:\s*relay\.test;/i.test(h));
    expect(ours).toHaveLength(1);
    expect(ours[0]).toMatch(/spf=pass/);
    expect(ours[0]).toMatch(/dkim=pass/);
    expect(ours[0]).toMatch(/dmarc=pass/);
    expect(head).not.toContain("header.d=bank.test");
    expect(head).toContain("Authentication-Results: other.example; spf=none");
    // Ours comes right after our Received: header, above everything the client sent.
    expect(head.split("\r\n").find((l) => !/^\s/.test(l) && !l.startsWith("Received:"))).toStartWith("Authentication-Results: relay.test;");
  });

  test("a From: domain with p=reject that fails SPF and has no signature: 550 5.7.1", async () => {
    const r = await send("ceo@spoofed.test", message("ceo@spoofed.test", "pay now"));
    expect(r.code).toBe(550);
    expect(r.text).toBe("5.7.1 Message rejected due to DMARC policy of spoofed.test");
  });
});

describe("scanners", () => {
  test("a virus is refused with 554 5.7.1 naming it; nothing is delivered", async () => {
    const r = await send("alice@origin.test", message("alice@origin.test", "invoice", "") + `${EICAR}\r\n`);
    expect(r.code).toBe(554);
    expect(r.text).toMatch(/^5\.7\.1 .*Eicar-Test-Signature/);
  });

  test("spam over the reject score is refused with 550 5.7.1; clean mail is tagged No", async () => {
    const spam = await send("alice@origin.test", message("alice@origin.test", "offer") + `${GTUBE}\r\n`);
    expect(spam.code).toBe(550);
    expect(spam.text).toStartWith("5.7.1 ");
    const ok = await send("alice@origin.test", message("alice@origin.test", "clean one"));
    expect(ok.code).toBe(250);
    const got = await waitFor(() => sink.messages.find((m) => m.raw.includes("cleanone@origin.test")), 20_000, "delivery");
    expect(got.raw.toString()).toMatch(/\r\nX-Spam-Status: No, score=/);
  }, 60_000);
});
