// The envelope as the queue gets it from smtp-server's session (NewMessage's parameters).

import { describe, expect, test } from "bun:test";
import type { SMTPServerEnvelope } from "smtp-server";
import { parseConfig } from "../../src/config/parse.ts";
import { parseMailbox } from "../../src/smtp/address.ts";
import { checkedAddress, envelopeParams, postmaster, recipientList } from "../../src/smtp/envelope.ts";

const env = (over: Partial<SMTPServerEnvelope>): SMTPServerEnvelope => ({ mailFrom: { address: "a@b.test", args: false }, rcptTo: [], bodyType: "7bit", smtpUtf8: false, dsn: { ret: null, envid: null }, ...over });

describe("envelopeParams", () => {
  test("nothing given: BODY null (not smtp-server's default 7bit), no DSN", () => {
    expect(envelopeParams(env({}))).toEqual({ bodyType: null, smtputf8: false, dsn: null });
  });
  test("BODY=, SMTPUTF8, RET and ENVID as the client gave them", () => {
    const e = env({ mailFrom: { address: "a@b.test", args: { BODY: "8bitmime", SMTPUTF8: true, RET: "hdrs", ENVID: "x+y" } }, smtpUtf8: true, dsn: { ret: "hdrs", envid: "x+y" } });
    expect(envelopeParams(e)).toEqual({ bodyType: "8BITMIME", smtputf8: true, dsn: { ret: "HDRS", envid: "x+y" } });
    expect(envelopeParams(env({ dsn: { ret: null, envid: "only-id" } })).dsn).toEqual({ ret: null, envid: "only-id" });
  });
});

describe("recipientList", () => {
  test("NOTIFY and ORCPT per recipient, each address once, routes from the caller", () => {
    const rcpts = [
      { address: "bob@dest.test", args: false as const, dsn: { notify: ["SUCCESS", "DELAY"], orcpt: "rfc822;bob@dest.test" } },
      { address: "Bob@dest.test", args: false as const },
      { address: "carol@dest.test", args: false as const },
    ];
    const list = recipientList(rcpts, rcpts.map((r) => parseMailbox(r.address)), (m) => `route-${m.domain}`);
    expect(list).toEqual([
      { address: "bob@dest.test", route: "route-dest.test", notify: ["SUCCESS", "DELAY"], orcpt: "rfc822;bob@dest.test" },
      { address: "carol@dest.test", route: "route-dest.test", notify: null, orcpt: null },
    ]);
  });
});

describe("addresses", () => {
  test("checkedAddress: the routed ASCII domain when smtp-server made Unicode of it, else as written", () => {
    expect(checkedAddress(parseMailbox("bob@bücher.test")!)).toBe("bob@xn--bcher-kva.test");
    expect(checkedAddress(parseMailbox("Bob@Dest.Test")!)).toBe("Bob@Dest.Test");
    expect(checkedAddress(parseMailbox("bob@[192.0.2.1]")!)).toBe("bob@[192.0.2.1]");
  });
  test("postmaster: of the first relay domain, else of our host name", () => {
    const withDomains = parseConfig({ hostname: "mx.example.org", relay: { domains: { "first.test": "smtp://10.0.0.1", "second.test": "smtp://10.0.0.2" } } }, { cwd: "/" });
    expect(postmaster(withDomains)?.address).toBe("postmaster@first.test");
    expect(postmaster(parseConfig({ hostname: "mx.example.org" }, { cwd: "/" }))?.address).toBe("postmaster@mx.example.org");
  });
});
