// The verification cache and the probe bounds (src/checks/envelope/recipient-verifier.ts) with a
// real policy.db, an injected clock and a probe function the test answers by hand (the probe
// itself is tested against real next hops in tests/e2e/recipient-validation.test.ts).

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RecipientVerifier } from "../../src/checks/envelope/recipient-verifier.ts";
import { parseConfig } from "../../src/config/parse.ts";
import type { Route } from "../../src/config/types.ts";
import type { ProbeResult } from "../../src/deliver/probe.ts";
import { PolicyStore } from "../../src/policy/store.ts";

const root = mkdtempSync(join(tmpdir(), "mailraven-verify-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const ROUTE: Route = { protocol: "smtp", host: "127.0.0.1", port: 2525, uri: "smtp://127.0.0.1:2525" };
const DAY = 86_400_000;

function setup(settings: Record<string, unknown> = {}) {
  const cfg = parseConfig({ hostname: "mx.example.org", relay: { recipient_verification: settings } }, { cwd: "/", resolvConf: "" }).relay.recipientVerification;
  const store = PolicyStore.open(mkdtempSync(join(root, `s${n++}-`)));
  let t = Date.UTC(2026, 0, 1);
  const calls: { address: string; answer: (r: ProbeResult) => void }[] = [];
  let running = 0;
  let maxRunning = 0;
  const verifier = new RecipientVerifier({
    cache: store,
    now: () => t,
    onProbe: () => {},
    probe: (_target, address) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      return new Promise<ProbeResult>((resolve) => calls.push({ address, answer: (r) => (running--, resolve(r)) }));
    },
  });
  return {
    cfg,
    store,
    calls,
    verify: (address: string) => verifier.verify(address, ROUTE, cfg, "mx.example.org"),
    later: (ms: number) => (t += ms),
    maxRunning: () => maxRunning,
  };
}

/** Lets the promise callbacks already due run (a probe's answer being saved, the next probe starting). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The verifier has made `count` probe calls once the due callbacks have run. */
async function probesMade(s: ReturnType<typeof setup>, count: number): Promise<void> {
  await settle();
  expect(s.calls.length).toBe(count);
}

const OK: ProbeResult = { kind: "ok", reply: "250 2.1.5 Ok" };
const UNKNOWN: ProbeResult = { kind: "unknown", reply: "550 5.1.1 User unknown" };
const TEMP: ProbeResult = { kind: "tempfail", reply: "451 4.3.0 try later" };

test("concurrent RCPTs for one address share one probe", async () => {
  const s = setup();
  const a = s.verify("alice@example.org");
  const b = s.verify("ALICE@example.org");
  await probesMade(s, 1);
  s.calls[0]!.answer(OK);
  expect(await a).toEqual({ kind: "ok" });
  expect(await b).toEqual({ kind: "ok" });
});

test("at most concurrency_per_hop probes run at once; the others wait their turn", async () => {
  const s = setup({ concurrency_per_hop: 2 });
  const results = ["a", "b", "c", "d"].map((x) => s.verify(`${x}@example.org`));
  await probesMade(s, 2);
  s.calls[0]!.answer(OK);
  await probesMade(s, 3);
  s.calls[1]!.answer(UNKNOWN);
  await probesMade(s, 4);
  s.calls[2]!.answer(OK);
  s.calls[3]!.answer(OK);
  expect(await Promise.all(results)).toEqual([{ kind: "ok" }, { kind: "unknown" }, { kind: "ok" }, { kind: "ok" }]);
  expect(s.maxRunning()).toBe(2);
});

test("a probe slower than `wait`: 'in progress' now, its answer cached for the retry", async () => {
  const s = setup({ wait: "100ms" });
  expect(await s.verify("slow@example.org")).toEqual({ kind: "unverified", why: "address verification in progress" });
  s.calls[0]!.answer(UNKNOWN);
  await settle();
  expect(await s.verify("slow@example.org")).toEqual({ kind: "unknown" });
  expect(s.calls).toHaveLength(1);
});

test("positive answers last 31 days and are refreshed in the background after 7; a failed refresh keeps them", async () => {
  const s = setup();
  const first = s.verify("bob@example.org");
  await probesMade(s, 1);
  s.calls[0]!.answer(OK);
  await first;
  s.later(6 * DAY);
  expect(await s.verify("bob@example.org")).toEqual({ kind: "ok" });
  expect(s.calls).toHaveLength(1);
  s.later(2 * DAY); // past the refresh time: answered from the cache, a probe starts behind it
  expect(await s.verify("bob@example.org")).toEqual({ kind: "ok" });
  await probesMade(s, 2);
  s.calls[1]!.answer(TEMP);
  await settle();
  expect(s.store.verifyEntry("bob@example.org")?.status).toBe("ok");
  s.later(24 * DAY); // 32 days after the answer: expired, asked again
  const again = s.verify("bob@example.org");
  await probesMade(s, 3);
  s.calls[2]!.answer(UNKNOWN);
  expect(await again).toEqual({ kind: "unknown" });
});

test("negative answers last 3 days; a temporary failure is never cached", async () => {
  const s = setup();
  const first = s.verify("gone@example.org");
  await probesMade(s, 1);
  s.calls[0]!.answer(TEMP);
  expect(await first).toEqual({ kind: "unverified", why: "the next hop could not be asked" });
  expect(s.store.verifyEntry("gone@example.org")).toBeNull();
  const second = s.verify("gone@example.org");
  await probesMade(s, 2);
  s.calls[1]!.answer(UNKNOWN);
  await second;
  expect(s.store.verifyEntry("gone@example.org")).toMatchObject({ status: "unknown", reply: "550 5.1.1 User unknown" });
  s.later(3 * DAY + 1);
  const third = s.verify("gone@example.org");
  await probesMade(s, 3);
  s.calls[2]!.answer(UNKNOWN);
  await third;
});
