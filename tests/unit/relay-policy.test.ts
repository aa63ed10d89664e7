import { describe, expect, test } from "bun:test";
import { relayPolicy, routeFor } from "../../src/checks/relay-policy.ts";
import type { ClientInfo } from "../../src/checks/types.ts";
import { parseConfig } from "../../src/config/parse.ts";
import type { RelayConfig } from "../../src/config/types.ts";
import { parseMailbox, type Mailbox } from "../../src/smtp/address.ts";
import type { Verdict } from "../../src/verdict.ts";

function relayConfig(smarthost?: string): RelayConfig {
  return parseConfig({
    hostname: "mx.relayed.example",
    relay: { domains: { "relayed.example": "smtp://10.0.0.5", "bücher.example": "lmtp://10.0.0.6" }, ...(smarthost ? { smarthost } : {}) },
  }).relay;
}

function client(trusted: boolean): ClientInfo {
  return { ip: trusted ? "10.1.1.1" : "203.0.113.9", port: 50000, hostname: "[203.0.113.9]", helo: "client.example", secure: false, trusted, user: null };
}

function mailbox(address: string): Mailbox {
  const m = parseMailbox(address);
  if (!m) throw new Error(`test setup: ${address} did not parse`);
  return m;
}

function verdict(relay: RelayConfig, trusted: boolean, rcpt: string): Verdict {
  return relayPolicy(relay)({ client: client(trusted), sender: "sender@outside.example", recipient: mailbox(rcpt) });
}

const ACCEPTED = { kind: "accept" } as const;
const RELAY_DENIED = { kind: "reject", code: 554, status: "5.7.1", text: "Relaying denied" };
const NO_ROUTE = { kind: "reject", code: 550, status: "5.4.4" };

describe("untrusted client (not in relay_networks)", () => {
  const relay = relayConfig("smtp://smarthost.example:587");

  test("mail to a relayed domain is accepted", () => {
    expect(verdict(relay, false, "user@relayed.example")).toEqual(ACCEPTED);
    expect(verdict(relay, false, "User@RELAYED.Example.")).toEqual(ACCEPTED);
    expect(verdict(relay, false, "kunde@Bücher.example")).toEqual(ACCEPTED);
  });

  test("mail to any other domain is relaying denied (554 5.7.1), even with a smarthost", () => {
    expect(verdict(relay, false, "victim@elsewhere.example")).toMatchObject(RELAY_DENIED);
    expect(verdict(relayConfig(), false, "victim@elsewhere.example")).toMatchObject(RELAY_DENIED);
  });

  test("a subdomain or a lookalike of a relayed domain is not relayed", () => {
    expect(verdict(relay, false, "user@sub.relayed.example")).toMatchObject(RELAY_DENIED);
    expect(verdict(relay, false, "user@relayed.example.evil.example")).toMatchObject(RELAY_DENIED);
    expect(verdict(relay, false, "user@xrelayed.example")).toMatchObject(RELAY_DENIED);
  });

  test.each(["user%evil.example@relayed.example", "user!host@relayed.example", "evil.example!user@relayed.example", '"user@evil.example"@relayed.example'])(
    "routing syntax in the local part (%p) is relaying denied",
    (rcpt) => {
      expect(verdict(relay, false, rcpt)).toMatchObject(RELAY_DENIED);
    },
  );

  test("an address literal recipient is relaying denied", () => {
    expect(verdict(relay, false, "postmaster@[10.0.0.5]")).toMatchObject(RELAY_DENIED);
    expect(verdict(relay, false, "postmaster@[IPv6:2001:db8::1]")).toMatchObject(RELAY_DENIED);
  });

  test("the rejection carries a reason for the log", () => {
    const v = verdict(relay, false, "victim@elsewhere.example");
    expect(v.kind === "reject" && v.reason.length > 0).toBe(true);
  });
});

describe("trusted client (in relay_networks)", () => {
  test("mail to a relayed domain is accepted, routing syntax included", () => {
    const relay = relayConfig();
    expect(verdict(relay, true, "user@relayed.example")).toEqual(ACCEPTED);
    expect(verdict(relay, true, "user%host@relayed.example")).toEqual(ACCEPTED);
  });

  test("another domain without a smarthost: 550 5.4.4, unable to route", () => {
    expect(verdict(relayConfig(), true, "someone@elsewhere.example")).toMatchObject(NO_ROUTE);
  });

  test("another domain with a smarthost: accepted", () => {
    expect(verdict(relayConfig("smtp://smarthost.example:587"), true, "someone@elsewhere.example")).toEqual(ACCEPTED);
  });

  test("an address literal is never routed, even with a smarthost", () => {
    expect(verdict(relayConfig("smtp://smarthost.example"), true, "postmaster@[192.0.2.1]")).toMatchObject(NO_ROUTE);
  });
});

describe("routeFor", () => {
  test("relayed domain -> its route; other -> smarthost; literal -> none", () => {
    const relay = relayConfig("smtp://smarthost.example:587");
    expect(routeFor(relay, mailbox("a@relayed.example"))?.uri).toBe("smtp://10.0.0.5");
    expect(routeFor(relay, mailbox("a@xn--bcher-kva.example"))?.uri).toBe("lmtp://10.0.0.6");
    expect(routeFor(relay, mailbox("a@other.example"))?.uri).toBe("smtp://smarthost.example:587");
    expect(routeFor(relay, mailbox("a@[10.0.0.5]"))).toBeNull();
    expect(routeFor(relayConfig(), mailbox("a@other.example"))).toBeNull();
  });
});
