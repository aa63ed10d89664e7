// Greylisting (src/checks/envelope/greylist.ts) with a real policy.db and an injected clock.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Verdict } from "../../src/verdict.ts";
import { clientNetwork, greylistCache, greylistCheck, type GreylistDecision } from "../../src/checks/envelope/greylist.ts";
import { buckets } from "../../src/checks/envelope/rate-limit.ts";
import { parseConfig } from "../../src/config/parse.ts";
import type { GreylistConfig } from "../../src/config/types.ts";
import { PolicyStore } from "../../src/policy/store.ts";
import { LocalState } from "../../src/state/local.ts";
import { parseMailbox } from "../../src/smtp/address.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-greylist-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

const T0 = Date.UTC(2024, 2, 5, 12);
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

/** The greylist section as mailraven reads it (defaults: 5m delay, 4h window, 36d pass TTL, 5 triplets). */
function greylistConfig(section: Record<string, unknown> = {}): GreylistConfig {
  return parseConfig({ hostname: "mx.example.org", defenses: { greylist: section } }, { cwd: "/", resolvConf: "" }).defenses.greylist!;
}

function setup(section: Record<string, unknown> = {}, dir = join(root, `state${dirs++}`)) {
  mkdirSync(dir, { recursive: true });
  const store = PolicyStore.open(dir);
  let t = T0;
  const decisions: GreylistDecision[] = [];
  const b = buckets();
  const check = greylistCheck(greylistConfig(section), new LocalState(store, () => b), greylistCache(), () => t, (d) => decisions.push(d));
  const rcpt = (ip: string, sender: string, recipient: string, trusted = false) => {
    const mailbox = parseMailbox(recipient);
    if (!mailbox) throw new Error(`test setup: ${recipient}`);
    // The node's own state answers synchronously: no promise on a single node's message path.
    return check({ client: { ip, port: 40000, hostname: `[${ip}]`, helo: "client.example", secure: false, user: null, trusted }, sender, recipient: mailbox }) as Verdict;
  };
  return {
    store,
    decisions,
    rcpt,
    dir,
    /** Moves the clock to T0 + ms. */
    at: (ms: number) => {
      t = T0 + ms;
    },
    close: () => store.close(),
  };
}

const greylisted = (seconds: number): Verdict => ({
  kind: "defer",
  code: 451,
  status: "4.7.1",
  text: `Greylisted, please try again in ${seconds} seconds`,
  reason: "greylisted",
});
const ACCEPT: Verdict = { kind: "accept" };

describe("clientNetwork", () => {
  test("IPv4: the /24", () => {
    expect(clientNetwork("192.0.2.77")).toBe("192.0.2.0/24");
    expect(clientNetwork("10.20.30.255")).toBe("10.20.30.0/24");
  });

  test("IPv4-mapped IPv6 is the IPv4 /24", () => {
    expect(clientNetwork("::ffff:192.0.2.77")).toBe("192.0.2.0/24");
  });

  test("IPv6: the /64", () => {
    expect(clientNetwork("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(clientNetwork("2001:db8:1:2::ffff")).toBe("2001:db8:1:2::/64");
    expect(clientNetwork("2001:db8::1")).toBe(clientNetwork("2001:db8:0:0:ffff::1"));
    expect(clientNetwork("2001:db8::1")).not.toBe(clientNetwork("2001:db8:0:1::1"));
  });
});

describe("the greylisting cycle", () => {
  test("a new triplet is deferred for the delay and stored", () => {
    const g = setup();
    expect(g.rcpt("192.0.2.10", "Alice@Sender.Example", "Bob@Example.ORG")).toEqual(greylisted(300));
    expect(g.decisions).toEqual(["new"]);
    expect(g.store.greylistEntry("192.0.2.0/24", "alice@sender.example", "bob@example.org")).toEqual({
      network: "192.0.2.0/24",
      sender: "alice@sender.example",
      recipient: "bob@example.org",
      firstSeen: T0,
      passAfter: T0 + 5 * MIN,
      expiresAt: T0 + 4 * HOUR,
      passes: 0,
    });
    g.close();
  });

  test("an early retry is told the seconds remaining (rounded up)", () => {
    const g = setup();
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(2 * MIN);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(180));
    g.at(5 * MIN - 1);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(1));
    expect(g.decisions).toEqual(["new", "early", "early"]);
    // Early retries do not restart the delay.
    expect(g.store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")?.passAfter).toBe(T0 + 5 * MIN);
    g.close();
  });

  test("a retry after the delay passes, from any address of the same /24", () => {
    const g = setup();
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(5 * MIN);
    expect(g.rcpt("192.0.2.200", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.decisions).toEqual(["new", "pass"]);
    expect(g.store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")).toMatchObject({ passes: 1, expiresAt: T0 + 5 * MIN + 36 * DAY });
    // Later messages of the triplet go straight through.
    g.at(6 * MIN);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.decisions).toEqual(["new", "pass", "pass"]);
    g.close();
  });

  test("another network, sender or recipient is a new triplet", () => {
    const g = setup();
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(10 * MIN);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("192.0.3.10", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.rcpt("192.0.2.10", "c@sender.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.rcpt("192.0.2.10", "a@sender.example", "d@example.org")).toEqual(greylisted(300));
    expect(g.rcpt("192.0.2.10", "", "b@example.org")).toEqual(greylisted(300));
    g.close();
  });

  test("an IPv6 client's triplet is its /64", () => {
    const g = setup();
    expect(g.rcpt("2001:db8:1:2::5", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    g.at(5 * MIN);
    expect(g.rcpt("2001:db8:1:2:aaaa::9", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("2001:db8:1:3::5", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    g.close();
  });

  test("a retry after the retry window starts over", () => {
    const g = setup();
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(4 * HOUR + 1);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.decisions).toEqual(["new", "new"]);
    expect(g.store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")).toMatchObject({
      firstSeen: T0 + 4 * HOUR + 1,
      passAfter: T0 + 4 * HOUR + 1 + 5 * MIN,
      passes: 0,
    });
    g.close();
  });

  test("the last moment of the retry window still passes", () => {
    const g = setup();
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(4 * HOUR);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    g.close();
  });

  test("configured delay and retry window", () => {
    const g = setup({ delay: "90s", retry_window: "10m" });
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(90));
    g.at(11 * MIN);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(90));
    g.at(11 * MIN + 90_000);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    g.close();
  });
});

describe("pass_ttl", () => {
  test("traffic within a day of the last extension writes nothing; later traffic extends the pass", () => {
    const g = setup({ pass_ttl: "10d" });
    const entry = () => g.store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")!;
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(5 * MIN);
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    expect(entry()).toMatchObject({ passes: 1, expiresAt: T0 + 5 * MIN + 10 * DAY });
    g.at(5 * MIN + 12 * HOUR);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(entry()).toMatchObject({ passes: 1, expiresAt: T0 + 5 * MIN + 10 * DAY });
    g.at(5 * MIN + 2 * DAY);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(entry()).toMatchObject({ passes: 2, expiresAt: T0 + 5 * MIN + 12 * DAY });
    g.close();
  });

  test("a triplet whose pass expired is greylisted again", () => {
    const g = setup({ pass_ttl: "10d" });
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(5 * MIN);
    g.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    g.at(5 * MIN + 10 * DAY + 1);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.decisions).toEqual(["new", "pass", "new"]);
    g.close();
  });
});

describe("auto-allowlist", () => {
  /** Greylists then passes a triplet for `recipient`, 5 minutes later. */
  function passTriplet(g: ReturnType<typeof setup>, start: number, recipient: string) {
    g.at(start);
    expect(g.rcpt("192.0.2.10", "a@sender.example", recipient)).toEqual(greylisted(300));
    g.at(start + 5 * MIN);
    expect(g.rcpt("192.0.2.10", "a@sender.example", recipient)).toEqual(ACCEPT);
  }

  test("a network with N passed triplets is allowlisted for pass_ttl", () => {
    const g = setup({ auto_allowlist_after: 3, pass_ttl: "10d" });
    passTriplet(g, 0, "r1@example.org");
    passTriplet(g, HOUR, "r2@example.org");
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + HOUR + 5 * MIN)).toBe(false);
    passTriplet(g, 2 * HOUR, "r3@example.org");
    const passedAt = 2 * HOUR + 5 * MIN;
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + passedAt)).toBe(true);
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + passedAt + 10 * DAY - 1)).toBe(true);
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + passedAt + 10 * DAY)).toBe(false);

    g.decisions.length = 0;
    g.at(passedAt + MIN);
    expect(g.rcpt("192.0.2.99", "new@elsewhere.example", "r4@example.org")).toEqual(ACCEPT);
    expect(g.decisions).toEqual(["allowlisted"]);
    expect(g.store.greylistEntry("192.0.2.0/24", "new@elsewhere.example", "r4@example.org")).toBeNull();
    // Another network is not.
    expect(g.rcpt("192.0.3.99", "new@elsewhere.example", "r4@example.org")).toEqual(greylisted(300));
    g.close();
  });

  test("0 turns it off", () => {
    const g = setup({ auto_allowlist_after: 0 });
    for (let i = 0; i < 6; i++) passTriplet(g, i * HOUR, `r${i}@example.org`);
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + 6 * HOUR)).toBe(false);
    g.at(6 * HOUR);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "another@example.org")).toEqual(greylisted(300));
    g.close();
  });

  test("the same triplet passing again does not count twice", () => {
    const g = setup({ auto_allowlist_after: 2 });
    passTriplet(g, 0, "r1@example.org");
    for (let day = 2; day < 6; day++) {
      g.at(day * DAY);
      expect(g.rcpt("192.0.2.10", "a@sender.example", "r1@example.org")).toEqual(ACCEPT);
    }
    expect(g.store.networkAllowed("192.0.2.0/24", T0 + 6 * DAY)).toBe(false);
    g.close();
  });
});

describe("static allowlists", () => {
  const section = {
    allow_clients: ["198.51.100.0/24", "2001:db8:feed::/48"],
    allow_senders: ["partner.example"],
    allow_recipients: ["Postmaster@Example.ORG", "abuse.example"],
  };

  test("a client network", () => {
    const g = setup(section);
    expect(g.rcpt("198.51.100.9", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("::ffff:198.51.100.9", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("2001:db8:feed:1::9", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("198.51.101.9", "a@sender.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.decisions).toEqual(["allowlisted", "allowlisted", "allowlisted", "new"]);
    expect(g.store.greylistEntry("198.51.100.0/24", "a@sender.example", "b@example.org")).toBeNull();
    g.close();
  });

  test("a sender domain (exactly, any case; not its subdomains)", () => {
    const g = setup(section);
    expect(g.rcpt("192.0.2.10", "Someone@Partner.EXAMPLE", "b@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("192.0.2.10", "someone@mail.partner.example", "b@example.org")).toEqual(greylisted(300));
    expect(g.rcpt("192.0.2.10", "someone@notpartner.example", "b@example.org")).toEqual(greylisted(300));
    g.close();
  });

  test("a recipient address, or a whole recipient domain", () => {
    const g = setup(section);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "POSTMASTER@example.org")).toEqual(ACCEPT);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "anyone@Abuse.Example")).toEqual(ACCEPT);
    expect(g.rcpt("192.0.2.10", "a@sender.example", "sales@example.org")).toEqual(greylisted(300));
    expect(g.decisions).toEqual(["allowlisted", "allowlisted", "new"]);
    g.close();
  });

  test("the null sender is not taken for an allowlisted domain", () => {
    const g = setup({ allow_senders: ["example.org"] });
    expect(g.rcpt("192.0.2.10", "", "b@example.org")).toEqual(greylisted(300));
    g.close();
  });
});

describe("trusted clients", () => {
  test("are never greylisted, reported or stored", () => {
    const g = setup();
    expect(g.rcpt("10.1.1.1", "a@sender.example", "b@example.org", true)).toEqual(ACCEPT);
    expect(g.decisions).toEqual([]);
    expect(g.store.listGreylist("", 10)).toEqual([]);
    g.close();
  });
});

describe("state", () => {
  test("survives a restart: a new check with an empty cache on the reopened database", () => {
    const first = setup();
    first.rcpt("192.0.2.10", "a@sender.example", "b@example.org");
    first.close();
    const second = setup({}, first.dir);
    second.at(5 * MIN);
    expect(second.rcpt("192.0.2.10", "a@sender.example", "b@example.org")).toEqual(ACCEPT);
    expect(second.decisions).toEqual(["pass"]);
    second.close();
  });
});
