// Sender authentication (SPF, DKIM, DMARC, ARC) against a real DNS server on loopback: keys and
// policies are published with dnsmasq, messages are signed with mailauth's dkimSign, and the
// check runs on ContentContext objects built here. DNS failures come from a server that never
// answers.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { Readable } from "node:stream";
import { dkimSign, sealMessage } from "mailauth";
import { authenticationCheck, type AuthenticationPolicy } from "../../src/checks/content/authentication.ts";
import type { ContentContext, ContentResult } from "../../src/checks/types.ts";
import { Resolver } from "../../src/dns/resolver.ts";
import { parseMailbox } from "../../src/smtp/address.ts";
import { BlackholeDns, DnsServer } from "../helpers/dns.ts";

const ID = "mx.example.org";
const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const DKIM_KEY = `v=DKIM1; k=rsa; p=${publicKey.export({ type: "spki", format: "der" }).toString("base64")}`;
const PRIVATE_PEM = privateKey.export({ type: "pkcs8", format: "pem" }).toString();

let dns: DnsServer;
let blackhole: BlackholeDns;
let good: Resolver;
let dead: Resolver;

beforeAll(async () => {
  dns = await DnsServer.start({
    txt: {
      // Over 255 bytes: published as one TXT record of several strings (node:dns under Bun splits it).
      "selector._domainkey.origin.test": [DKIM_KEY],
      "selector._domainkey.forwarder.test": [DKIM_KEY],
      "origin.test": ["v=spf1 ip4:127.0.0.1 -all"],
      "_dmarc.origin.test": ["v=DMARC1; p=reject"],
      "spoofed.test": ["v=spf1 -all"],
      "_dmarc.spoofed.test": ["v=DMARC1; p=reject"],
      "nodmarc.test": ["v=spf1 -all"],
      "soft.test": ["v=spf1 ~all"],
      "parent.test": ["v=spf1 -all"],
      "sub.parent.test": ["v=spf1 -all"],
      "_dmarc.parent.test": ["v=DMARC1; p=none; sp=reject"],
    },
  });
  blackhole = await BlackholeDns.start();
  // Small timeouts keep the DNS failure cases fast.
  good = new Resolver({ servers: [{ host: "127.0.0.1", port: dns.port }], timeoutMs: 300, attempts: 1 });
  dead = new Resolver({ servers: [{ host: "127.0.0.1", port: blackhole.port }], timeoutMs: 300, attempts: 1 });
}, 60_000);
afterAll(async () => {
  await dns.stop();
  await blackhole.stop();
}, 60_000);

const ENFORCE: AuthenticationPolicy = { spfFail: "reject", dmarcReject: true, tempError: "defer" };

function check(policy: Partial<AuthenticationPolicy> = {}, resolver = good.forMailauth, errors: Error[] = []) {
  return authenticationCheck({
    authservId: ID,
    resolver,
    policy: () => ({ ...ENFORCE, ...policy }),
    onError: (err) => errors.push(err),
  });
}

function context(message: string | Buffer | (() => NodeJS.ReadableStream), sender: string, helo = "mail.origin.test"): ContentContext {
  const buf = typeof message === "function" ? Buffer.alloc(0) : Buffer.from(message);
  const end = buf.indexOf("\r\n\r\n");
  return {
    client: { ip: "127.0.0.1", port: 40000, hostname: "localhost", helo, secure: false, trusted: false, user: null },
    sender,
    recipients: [parseMailbox("bob@dest.test")!],
    localDomains: ["dest.test"],
    message: typeof message === "function" ? message : () => Readable.from(buf),
    size: buf.length,
    head: end < 0 ? null : buf.subarray(0, end + 2).toString("latin1"),
  };
}

const message = (from: string, extra = "") =>
  `${extra}From: ${from}\r\nTo: bob@dest.test\r\nSubject: auth test\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@test>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\nHello Bob,\r\nthe numbers are in.\r\n`;

async function signed(msg: string, domain = "origin.test"): Promise<string> {
  const key = { signingDomain: domain, selector: "selector", privateKey: PRIVATE_PEM };
  // mailauth signs with signatureData only; its typings also demand the fields at the top level.
  const res = await dkimSign(msg, { ...key, signatureData: [key] });
  expect(res.errors).toEqual([]);
  return res.signatures + msg;
}

/** The one header in `add`, after checking it is a well-formed single header. */
function header(r: ContentResult): string {
  expect(r.add).toHaveLength(1);
  const h = r.add![0]!;
  expect(h).toStartWith(`Authentication-Results: ${ID};`);
  expect(h).not.toMatch(/\r(?!\n)|(?<!\r)\n/); // no bare CR or LF
  for (const line of h.split("\r\n").slice(1)) expect(line).toMatch(/^[ \t]+\S/); // continuations only
  expect(h).not.toMatch(/\r\n$/);
  return h;
}

describe("authentication results", () => {
  test("the DKIM key is published as a multi-string TXT record", () => {
    expect(DKIM_KEY.length).toBeGreaterThan(255);
  });

  test("signed, aligned mail from a permitted address: accept, spf/dkim/dmarc pass, arc none", async () => {
    const r = await check()(context(await signed(message("Alice <alice@origin.test>")), "alice@origin.test"));
    expect(r.verdict).toEqual({ kind: "accept" });
    const h = header(r);
    expect(h).toContain("spf=pass");
    expect(h).toContain("dkim=pass header.d=origin.test");
    expect(h).toContain("dmarc=pass");
    expect(h).toContain("header.from=origin.test");
    expect(h).toContain("arc=none");
    expect(h).not.toContain("Received-SPF");
  });

  test("a body changed after signing: dkim=fail; SPF still passes DMARC", async () => {
    const msg = (await signed(message("alice@origin.test"))).replace("the numbers are in", "the numbers are OUT");
    const r = await check()(context(msg, "alice@origin.test"));
    expect(r.verdict.kind).toBe("accept");
    const h = header(r);
    expect(h).toContain("dkim=fail (body hash did not verify)");
    expect(h).toContain("dmarc=pass");
  });

  test("From a p=reject domain, SPF fail and no DKIM: 550 5.7.1 for DMARC", async () => {
    const r = await check({ spfFail: "tag" })(context(message("CEO <ceo@spoofed.test>"), "ceo@spoofed.test"));
    expect(r.verdict).toEqual({ kind: "reject", code: 550, status: "5.7.1", text: "Message rejected due to DMARC policy of spoofed.test", reason: "dmarc" });
  });

  test("an ARC set added by a forwarder verifies: arc=pass (we verify, we do not seal)", async () => {
    const msg = await signed(message("alice@origin.test"));
    const seal = await sealMessage(msg, {
      signingDomain: "forwarder.test",
      selector: "selector",
      privateKey: PRIVATE_PEM,
      authResults: "mx.forwarder.test; spf=pass smtp.mailfrom=origin.test",
      cv: "none",
    });
    const r = await check()(context(seal.toString() + msg, "alice@origin.test"));
    const h = header(r);
    expect(h).toContain("arc=pass");
    expect(h).toContain("dkim=pass");
    expect(r.add!.some((a) => /^ARC-/i.test(a))).toBe(false);
  });

  test("a DMARC failure with dmarcReject off is tagged, not refused", async () => {
    const r = await check({ spfFail: "tag", dmarcReject: false })(context(message("ceo@spoofed.test"), "ceo@spoofed.test"));
    expect(r.verdict.kind).toBe("accept");
    expect(header(r)).toContain("dmarc=fail");
  });

  test("the applied policy counts: sp=reject refuses a subdomain, p=none of the parent only tags", async () => {
    const sub = await check({ spfFail: "tag" })(context(message("x@sub.parent.test"), "x@sub.parent.test"));
    expect(sub.verdict).toMatchObject({ kind: "reject", code: 550, status: "5.7.1", text: "Message rejected due to DMARC policy of sub.parent.test" });
    const parent = await check({ spfFail: "tag" })(context(message("x@parent.test"), "x@parent.test"));
    expect(parent.verdict.kind).toBe("accept");
    expect(header(parent)).toContain("dmarc=fail");
  });

  test("SPF fail for a domain without DMARC: 550 5.7.1 with spfFail reject", async () => {
    const r = await check({ spfFail: "reject" })(context(message("x@nodmarc.test"), "x@nodmarc.test"));
    expect(r.verdict).toEqual({ kind: "reject", code: 550, status: "5.7.1", text: "Message rejected: SPF check failed for nodmarc.test", reason: "spf" });
  });

  test("SPF fail with spfFail tag: accept, spf=fail in the header", async () => {
    const r = await check({ spfFail: "tag" })(context(message("x@nodmarc.test"), "x@nodmarc.test"));
    expect(r.verdict.kind).toBe("accept");
    const h = header(r);
    expect(h).toContain("spf=fail");
    expect(h).toContain("dmarc=none");
  });

  test("SPF softfail only tags, even with spfFail reject", async () => {
    const r = await check({ spfFail: "reject" })(context(message("x@soft.test"), "x@soft.test"));
    expect(r.verdict.kind).toBe("accept");
    expect(header(r)).toContain("spf=softfail");
  });

  test("the null sender: SPF checks the HELO name", async () => {
    const r = await check({ spfFail: "reject" })(context(message("mailer-daemon@nodmarc.test"), "", "nodmarc.test"));
    expect(r.verdict).toMatchObject({ kind: "reject", reason: "spf", text: "Message rejected: SPF check failed for nodmarc.test" });
  });
});

describe("forged Authentication-Results", () => {
  test("ours are dropped, other servers' stay; our own header replaces them", async () => {
    const forged = message("alice@nodmarc.test", `Authentication-Results: ${ID}; dkim=pass header.d=nodmarc.test\r\n`);
    const r = await check({ spfFail: "tag" })(context(forged, "alice@nodmarc.test"));
    const drop = r.drop!;
    expect(drop("Authentication-Results", ` ${ID}; dkim=pass header.d=nodmarc.test`)).toBe(true);
    expect(drop("authentication-results", "MX.Example.ORG 1; none")).toBe(true);
    expect(drop("Authentication-Results", `mx.example.org.; spf=pass`)).toBe(true);
    expect(drop("Authentication-Results", `(forged) "${ID}"; dkim=pass`)).toBe(true);
    expect(drop("Authentication-Results", `other.example.net; dkim=pass header.d=nodmarc.test`)).toBe(false);
    expect(drop("Authentication-Results", `mx.example.org.evil.test; dkim=pass`)).toBe(false);
    expect(drop("X-Authentication-Results", `${ID}; dkim=pass`)).toBe(false);
    expect(drop("ARC-Authentication-Results", `i=1; ${ID}; dkim=pass`)).toBe(false);
    // The forged dkim=pass did not make it into our results: the message is not signed.
    const h = header(r);
    expect(h).toContain("dkim=none");
    expect(h).not.toContain("dkim=pass");
  });
});

describe("DNS failures", () => {
  test("no answer at all: 451 4.7.5 with tempError defer", async () => {
    const r = await check({ tempError: "defer" }, dead.forMailauth)(context(await signed(message("alice@origin.test")), "alice@origin.test"));
    expect(r.verdict).toEqual({
      kind: "defer",
      code: 451,
      status: "4.7.5",
      text: "Temporary DNS error during sender authentication, try again later",
      reason: "auth temperror",
    });
  });

  test("no answer at all: accept with tempError accept, temperror in the header", async () => {
    const r = await check({ tempError: "accept" }, dead.forMailauth)(context(await signed(message("alice@origin.test")), "alice@origin.test"));
    expect(r.verdict.kind).toBe("accept");
    const h = header(r);
    expect(h).toContain("spf=temperror");
    expect(h).toContain("dkim=temperror");
    expect(h).toContain("dmarc=temperror");
  });

  test("an SPF timeout that cannot change the verdict does not defer: DKIM passes DMARC", async () => {
    // The SPF record's server never answers; the key and the DMARC record come from dnsmasq.
    const split = (name: string, type: string) => (type === "TXT" && name === "origin.test" ? dead : good).forMailauth(name, type);
    const tag = await check({ spfFail: "tag" }, split)(context(await signed(message("alice@origin.test")), "alice@origin.test"));
    expect(tag.verdict.kind).toBe("accept");
    expect(header(tag)).toContain("spf=temperror");
    expect(header(tag)).toContain("dmarc=pass");
    // With spfFail reject the missing answer could have been a fail: defer.
    const strict = await check({ spfFail: "reject" }, split)(context(await signed(message("alice@origin.test")), "alice@origin.test"));
    expect(strict.verdict).toMatchObject({ kind: "defer", code: 451, reason: "auth temperror" });
  });

  test("a DMARC fail that an unanswered SPF lookup might have passed defers instead of rejecting", async () => {
    const split = (name: string, type: string) => (type === "TXT" && name === "spoofed.test" ? dead : good).forMailauth(name, type);
    const r = await check({ spfFail: "tag" }, split)(context(message("ceo@spoofed.test"), "ceo@spoofed.test"));
    expect(r.verdict).toMatchObject({ kind: "defer", code: 451, status: "4.7.5" });
  });
});

describe("failures inside mailauth", () => {
  test("an exception is reported and fails open with A-R none; forged headers still go", async () => {
    const errors: Error[] = [];
    const broken = () =>
      new Readable({
        read() {
          this.destroy(new Error("client stream broke"));
        },
      });
    const r = await check({}, good.forMailauth, errors)({ ...context(broken, "alice@origin.test"), head: "From: alice@origin.test\r\n\r\n" });
    expect(errors.map((e) => e.message)).toEqual(["client stream broke"]);
    expect(r.verdict.kind).toBe("accept");
    expect(r.add).toEqual([`Authentication-Results: ${ID}; none`]);
    expect(r.drop!("Authentication-Results", `${ID}; dkim=pass`)).toBe(true);
  });

  test("an authserv-id that is not a host name is refused when the check is built", () => {
    expect(() => authenticationCheck({ authservId: "mx example; org", resolver: good.forMailauth, policy: () => ENFORCE, onError: () => {} })).toThrow(/authserv-id/);
  });
});
