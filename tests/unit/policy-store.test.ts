// policy.db (src/policy/store.ts): greylist triplets, allowlisted networks, the dynamic blocklist.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PolicyStore, type GreylistEntry } from "../../src/policy/store.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-policy-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const T0 = Date.UTC(2024, 2, 5, 12);
const HOUR = 3_600_000;

function freshDir(): string {
  const dir = join(root, `state${dirs++}`);
  mkdirSync(dir);
  return dir;
}

function withStore(fn: (store: PolicyStore, dir: string) => void): void {
  const dir = freshDir();
  const store = PolicyStore.open(dir);
  try {
    fn(store, dir);
  } finally {
    store.close();
  }
}

function triplet(network: string, sender: string, recipient: string, over: Partial<GreylistEntry> = {}): GreylistEntry {
  return { network, sender, recipient, firstSeen: T0, passAfter: T0 + 300_000, expiresAt: T0 + 4 * HOUR, passes: 0, ...over };
}

const key = (e: GreylistEntry) => `${e.network} ${e.sender} ${e.recipient}`;

describe("greylist triplets", () => {
  test("saved and read back; unknown triplets are null", () => {
    withStore((store) => {
      const e = triplet("192.0.2.0/24", "a@sender.example", "b@example.org");
      store.saveGreylist(e);
      expect(store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")).toEqual(e);
      expect(store.greylistEntry("192.0.2.0/24", "a@sender.example", "c@example.org")).toBeNull();
      expect(store.greylistEntry("192.0.3.0/24", "a@sender.example", "b@example.org")).toBeNull();
    });
  });

  test("saving the same triplet again replaces it", () => {
    withStore((store) => {
      store.saveGreylist(triplet("192.0.2.0/24", "a@sender.example", "b@example.org"));
      const passed = triplet("192.0.2.0/24", "a@sender.example", "b@example.org", { expiresAt: T0 + 36 * 24 * HOUR, passes: 3 });
      store.saveGreylist(passed);
      expect(store.greylistEntry("192.0.2.0/24", "a@sender.example", "b@example.org")).toEqual(passed);
      expect(store.listGreylist("", 10)).toHaveLength(1);
    });
  });

  test("passedTriplets counts the network's triplets that passed at least once", () => {
    withStore((store) => {
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r1@example.org", { passes: 1 }));
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r2@example.org", { passes: 7 }));
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r3@example.org", { passes: 0 }));
      store.saveGreylist(triplet("192.0.3.0/24", "a@x.example", "r1@example.org", { passes: 1 }));
      expect(store.passedTriplets("192.0.2.0/24")).toBe(2);
      expect(store.passedTriplets("192.0.3.0/24")).toBe(1);
      expect(store.passedTriplets("198.51.100.0/24")).toBe(0);
    });
  });

  test("listGreylist pages in (network, sender, recipient) order, resuming after a key", () => {
    withStore((store) => {
      const all = [
        triplet("2001:db8::/64", "a@x.example", "r@example.org"),
        triplet("192.0.2.0/24", "b@x.example", "r@example.org"),
        triplet("192.0.2.0/24", "", "postmaster@example.org"), // the null sender
        triplet("192.0.2.0/24", "a@x.example", "s@example.org"),
        triplet("192.0.2.0/24", "a@x.example", "r@example.org"),
        triplet("10.0.0.0/24", "z@x.example", "r@example.org"),
      ];
      for (const e of all) store.saveGreylist(e);
      const expected = [
        "10.0.0.0/24 z@x.example r@example.org",
        "192.0.2.0/24  postmaster@example.org",
        "192.0.2.0/24 a@x.example r@example.org",
        "192.0.2.0/24 a@x.example s@example.org",
        "192.0.2.0/24 b@x.example r@example.org",
        "2001:db8::/64 a@x.example r@example.org",
      ];
      expect(store.listGreylist("", 100).map(key)).toEqual(expected);

      const pages: string[][] = [];
      let after = "";
      for (;;) {
        const page = store.listGreylist(after, 4);
        pages.push(page.map(key));
        if (page.length < 4) break;
        after = key(page[page.length - 1]!);
      }
      expect(pages).toEqual([expected.slice(0, 4), expected.slice(4)]);
      expect(store.listGreylist(expected[1]!, 2).map(key)).toEqual(expected.slice(2, 4));
      expect(store.listGreylist(expected[5]!, 2)).toEqual([]);
      expect(store.listGreylist("", 100)[0]).toEqual(all[5]!);
    });
  });

  test("removeGreylist removes one triplet, or a whole network", () => {
    withStore((store) => {
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r1@example.org"));
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r2@example.org"));
      store.saveGreylist(triplet("192.0.2.0/24", "b@x.example", "r1@example.org"));
      store.saveGreylist(triplet("192.0.3.0/24", "a@x.example", "r1@example.org"));
      expect(store.removeGreylist("192.0.2.0/24", "a@x.example", "r1@example.org")).toBe(1);
      expect(store.removeGreylist("192.0.2.0/24", "a@x.example", "r1@example.org")).toBe(0);
      expect(store.greylistEntry("192.0.2.0/24", "a@x.example", "r2@example.org")).not.toBeNull();
      expect(store.removeGreylist("192.0.2.0/24", null, null)).toBe(2);
      expect(store.listGreylist("", 10).map(key)).toEqual(["192.0.3.0/24 a@x.example r1@example.org"]);
      expect(store.removeGreylist("198.51.100.0/24", null, null)).toBe(0);
    });
  });
});

describe("allowlisted networks", () => {
  test("allowed until the given time, not at it", () => {
    withStore((store) => {
      expect(store.networkAllowed("192.0.2.0/24", T0)).toBe(false);
      store.allowNetwork("192.0.2.0/24", T0 + HOUR);
      expect(store.networkAllowed("192.0.2.0/24", T0)).toBe(true);
      expect(store.networkAllowed("192.0.2.0/24", T0 + HOUR - 1)).toBe(true);
      expect(store.networkAllowed("192.0.2.0/24", T0 + HOUR)).toBe(false);
      expect(store.networkAllowed("192.0.3.0/24", T0)).toBe(false);
    });
  });

  test("allowing again moves the expiry", () => {
    withStore((store) => {
      store.allowNetwork("192.0.2.0/24", T0 + HOUR);
      store.allowNetwork("192.0.2.0/24", T0 + 2 * HOUR);
      expect(store.networkAllowed("192.0.2.0/24", T0 + HOUR + 1)).toBe(true);
      expect(store.networkAllowed("192.0.2.0/24", T0 + 2 * HOUR)).toBe(false);
    });
  });
});

describe("blocklist", () => {
  test("block returns the entry; blocked finds the one covering an address while it is active", () => {
    withStore((store) => {
      expect(store.block("192.0.2.0/24", "brute force", T0, T0 + HOUR)).toEqual({ cidr: "192.0.2.0/24", reason: "brute force", createdAt: T0, expiresAt: T0 + HOUR });
      store.block("2001:db8::/32", "spam run", T0 + 1, null);
      expect(store.blocked("192.0.2.77", T0)).toMatchObject({ cidr: "192.0.2.0/24", reason: "brute force" });
      expect(store.blocked("192.0.2.77", T0 + HOUR - 1)).not.toBeNull();
      expect(store.blocked("192.0.2.77", T0 + HOUR)).toBeNull();
      expect(store.blocked("2001:db8:1::1", T0 + 1000 * HOUR)).toMatchObject({ cidr: "2001:db8::/32", expiresAt: null });
      expect(store.blocked("198.51.100.1", T0)).toBeNull();
    });
  });

  test("blocklist lists the active entries, oldest first", () => {
    withStore((store) => {
      store.block("192.0.2.0/24", "a", T0, T0 + HOUR);
      store.block("198.51.100.7", "b", T0 + 1, null);
      expect(store.blocklist(T0).map((b) => b.cidr)).toEqual(["192.0.2.0/24", "198.51.100.7"]);
      expect(store.blocklist(T0 + HOUR).map((b) => b.cidr)).toEqual(["198.51.100.7"]);
    });
  });

  test("blocking a network again updates reason and expiry, keeping when it was first blocked", () => {
    withStore((store) => {
      store.block("192.0.2.0/24", "first", T0, T0 + HOUR);
      expect(store.block("192.0.2.0/24", "second", T0 + 5, null)).toEqual({ cidr: "192.0.2.0/24", reason: "second", createdAt: T0, expiresAt: null });
      expect(store.blocklist(T0 + 10 * HOUR)).toHaveLength(1);
    });
  });

  test("unblock removes an entry and says whether there was one", () => {
    withStore((store) => {
      store.block("192.0.2.0/24", "a", T0, null);
      expect(store.unblock("192.0.2.0/24")).toBe(true);
      expect(store.unblock("192.0.2.0/24")).toBe(false);
      expect(store.blocked("192.0.2.1", T0)).toBeNull();
      expect(store.blocklist(T0)).toEqual([]);
    });
  });

  test("something that is not a network is refused", () => {
    withStore((store) => {
      expect(() => store.block("example.org", "x", T0, null)).toThrow("not a network: example.org");
      expect(() => store.block("192.0.2.0/33", "x", T0, null)).toThrow("not a network");
      expect(store.blocklist(T0)).toEqual([]);
    });
  });
});

describe("expire", () => {
  test("deletes expired triplets, allowlisted networks and blocks; keeps the rest", () => {
    withStore((store) => {
      store.saveGreylist(triplet("192.0.2.0/24", "old@x.example", "r@example.org", { expiresAt: T0 + HOUR }));
      store.saveGreylist(triplet("192.0.2.0/24", "new@x.example", "r@example.org", { expiresAt: T0 + 3 * HOUR }));
      store.allowNetwork("192.0.2.0/24", T0 + HOUR);
      store.allowNetwork("192.0.3.0/24", T0 + 3 * HOUR);
      store.block("198.51.100.1", "old", T0, T0 + HOUR);
      store.block("198.51.100.2", "new", T0, T0 + 3 * HOUR);
      store.block("198.51.100.3", "forever", T0, null);

      store.expire(T0 + HOUR);

      expect(store.listGreylist("", 10).map((e) => e.sender)).toEqual(["new@x.example"]);
      // Asked about a time before the expiry: only a deleted row answers false.
      expect(store.networkAllowed("192.0.2.0/24", T0)).toBe(false);
      expect(store.networkAllowed("192.0.3.0/24", T0)).toBe(true);
      expect(store.blocklist(T0).map((b) => b.cidr)).toEqual(["198.51.100.2", "198.51.100.3"]);
      expect(store.blocked("198.51.100.1", T0)).toBeNull();
    });
  });
});

describe("the database file", () => {
  test("everything survives closing and reopening", () => {
    const dir = freshDir();
    const first = PolicyStore.open(dir);
    const e = triplet("192.0.2.0/24", "a@x.example", "r@example.org", { passes: 2 });
    first.saveGreylist(e);
    first.allowNetwork("192.0.2.0/24", T0 + HOUR);
    first.block("198.51.100.0/24", "abuse", T0, T0 + HOUR);
    first.close();

    const second = PolicyStore.open(dir);
    try {
      expect(second.greylistEntry("192.0.2.0/24", "a@x.example", "r@example.org")).toEqual(e);
      expect(second.networkAllowed("192.0.2.0/24", T0)).toBe(true);
      expect(second.blocked("198.51.100.9", T0)).toEqual({ cidr: "198.51.100.0/24", reason: "abuse", createdAt: T0, expiresAt: T0 + HOUR });
    } finally {
      second.close();
    }
  });

  test("policy.db and its WAL files are readable by the owner only", () => {
    withStore((store, dir) => {
      store.saveGreylist(triplet("192.0.2.0/24", "a@x.example", "r@example.org"));
      const files = readdirSync(dir).filter((f) => f.startsWith("policy.db"));
      expect(files).toContain("policy.db");
      for (const f of files) expect([f, statSync(join(dir, f)).mode & 0o777]).toEqual([f, 0o600]);
    });
  });
});

describe("MTA-STS policies", () => {
  test("kept until they expire, across a reopen; replaced, removed, and swept by expire()", () => {
    const dir = freshDir();
    const first = PolicyStore.open(dir);
    first.saveStsPolicy("dest.test", '{"id":"1"}', T0 + HOUR);
    first.saveStsPolicy("gone.test", '{"id":"g"}', T0 + HOUR);
    first.saveStsPolicy("dest.test", '{"id":"2"}', T0 + 2 * HOUR);
    first.removeStsPolicy("gone.test");
    first.close();
    const second = PolicyStore.open(dir);
    try {
      expect(second.stsPolicy("dest.test", T0)).toBe('{"id":"2"}');
      expect(second.stsPolicy("gone.test", T0)).toBeNull();
      expect(second.stsPolicy("dest.test", T0 + 2 * HOUR)).toBeNull();
      second.expire(T0 + 2 * HOUR);
      expect(second.stsPolicy("dest.test", T0)).toBeNull();
    } finally {
      second.close();
    }
  });
});
