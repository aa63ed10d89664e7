// MTA-STS decisions (src/deliver/mta-sts.ts): which MX hosts a policy allows and with which
// TLS policy, and the policy cache around mailauth's getPolicy (a stub here; the HTTPS fetch
// itself runs end to end in tests/e2e/mx-delivery.test.ts).

import { describe, expect, test } from "bun:test";
import type { MTASTSPolicy, MTASTSPolicyResult } from "mailauth";
import { applyStsPolicy, MtaStsPolicies, type FetchPolicy } from "../../src/deliver/mta-sts.ts";
import type { MailHost } from "../../src/deliver/mx.ts";
import { DeliveryFailure } from "../../src/deliver/result.ts";

const host = (name: string, preference = 10): MailHost => ({ name, preference, addresses: ["192.0.2.1"] });
const HOSTS = [host("mx1.dest.test"), host("mx2.backup.dest.test", 20), host("other.example.test", 30)];
const policy = (mode: MTASTSPolicy["mode"], mx: string[]): MTASTSPolicy => ({ id: "1", mode, mx, maxAge: 86400, expires: new Date(Date.now() + 86_400_000).toISOString() });
const noDns = async () => [];

describe("applyStsPolicy", () => {
  test("no policy or mode none: every host, the configured TLS policy", () => {
    for (const p of [null, policy("none", [])]) {
      const plan = applyStsPolicy("dest.test", HOSTS, "opportunistic", p);
      expect(plan.targets.map((t) => [t.host.name, t.tls])).toEqual(HOSTS.map((h) => [h.name, "opportunistic"]));
      expect(plan.wouldRefuse).toEqual([]);
    }
  });

  test("enforce: only matching hosts (a wildcard matches one label), each with verify, even if none was configured", () => {
    const plan = applyStsPolicy("dest.test", HOSTS, "none", policy("enforce", ["mx1.dest.test", "*.backup.dest.test"]));
    expect(plan.targets.map((t) => [t.host.name, t.tls])).toEqual([
      ["mx1.dest.test", "verify"],
      ["mx2.backup.dest.test", "verify"],
    ]);
    expect(() => applyStsPolicy("dest.test", [host("a.b.backup.dest.test")], "none", policy("enforce", ["*.dest.test"]))).toThrow(DeliveryFailure);
  });

  test("enforce with no matching host: a temporary 4.7.5 failure, so the policy is looked up again before giving up", () => {
    try {
      applyStsPolicy("dest.test", HOSTS, "opportunistic", policy("enforce", ["mx.elsewhere.test"]));
      throw new Error("expected a failure");
    } catch (err) {
      expect(err).toBeInstanceOf(DeliveryFailure);
      expect((err as DeliveryFailure).result).toEqual({
        kind: "temporary",
        response: "4.7.5 MTA-STS policy of dest.test allows none of its MX hosts (mx1.dest.test, mx2.backup.dest.test, other.example.test)",
      });
    }
  });

  test("testing: every host with the configured policy; the ones enforce would refuse are named", () => {
    const plan = applyStsPolicy("dest.test", HOSTS, "required", policy("testing", ["mx1.dest.test"]));
    expect(plan.targets.map((t) => t.tls)).toEqual(["required", "required", "required"]);
    expect(plan.wouldRefuse).toEqual(["mx2.backup.dest.test", "other.example.test"]);
  });
});

describe("MtaStsPolicies", () => {
  function recorder(answers: (MTASTSPolicyResult | Error)[]) {
    const known: (MTASTSPolicy | null)[] = [];
    const fetch: FetchPolicy = async (_domain, k) => {
      known.push(k);
      const a = answers.shift()!;
      if (a instanceof Error) throw a;
      return a;
    };
    return { fetch, known };
  }

  test("a fetched policy is cached and handed back to getPolicy (which decides whether to fetch again)", async () => {
    const p = policy("enforce", ["mx1.dest.test"]);
    const r = recorder([{ policy: p, status: "found" }, { policy: p, status: "renewed" }]);
    const sts = new MtaStsPolicies(r.fetch);
    expect((await sts.lookup("Dest.test", noDns, 1000)).policy).toEqual(p);
    expect((await sts.lookup("dest.test", noDns, 1000)).status).toBe("renewed");
    expect(r.known).toEqual([null, p]);
  });

  test("a fetch error keeps the cached policy (RFC 8461 5.1) and reports the error; the error is not cached", async () => {
    const p = policy("enforce", ["mx1.dest.test"]);
    const boom = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    const r = recorder([{ policy: p, status: "found" }, { policy: { ...p, error: boom }, status: "errored" }, new Error("thrown")]);
    const sts = new MtaStsPolicies(r.fetch);
    await sts.lookup("dest.test", noDns, 1000);
    const second = await sts.lookup("dest.test", noDns, 1000);
    expect(second.policy).toEqual(p);
    expect(second.error).toBe(boom);
    const third = await sts.lookup("dest.test", noDns, 1000);
    expect(third.policy).toEqual(p);
    expect(third.error?.message).toBe("thrown");
    expect(r.known).toEqual([null, p, p]);
  });

  test("no policy published: mode none, and a cached one is forgotten", async () => {
    const r = recorder([{ policy: policy("enforce", ["mx1.dest.test"]), status: "found" }, { policy: { id: false, mode: "none" }, status: "not_found" }, { policy: { id: false, mode: "none" }, status: "not_found" }]);
    const sts = new MtaStsPolicies(r.fetch);
    await sts.lookup("dest.test", noDns, 1000);
    expect((await sts.lookup("dest.test", noDns, 1000)).policy.mode).toBe("none");
    await sts.lookup("dest.test", noDns, 1000);
    expect(r.known[2]).toBeNull();
  });

  test("a policy outlives the process in the store: a new instance hands it to getPolicy; an unchanged one is not written again", async () => {
    const p = policy("enforce", ["mx1.dest.test"]);
    const saved = new Map<string, string>();
    let writes = 0;
    const store = {
      stsPolicy: (d: string) => saved.get(d) ?? null,
      saveStsPolicy: (d: string, json: string) => (writes++, saved.set(d, json)),
      removeStsPolicy: (d: string) => void saved.delete(d),
    };
    const first = recorder([{ policy: p, status: "found" }, { policy: p, status: "renewed" }]);
    const sts = new MtaStsPolicies(first.fetch, store);
    await sts.lookup("dest.test", noDns, 1000);
    await sts.lookup("dest.test", noDns, 1000);
    expect(writes).toBe(1);
    const second = recorder([{ policy: p, status: "renewed" }, { policy: { id: false, mode: "none" }, status: "not_found" }]);
    const restarted = new MtaStsPolicies(second.fetch, store);
    expect((await restarted.lookup("dest.test", noDns, 1000)).policy).toEqual(p);
    expect(second.known).toEqual([p]);
    await restarted.lookup("dest.test", noDns, 1000);
    expect(saved.size).toBe(0);
  });

  test("an expired or unreadable stored policy is not used", async () => {
    const old = { ...policy("enforce", ["mx1.dest.test"]), expires: new Date(Date.now() - 1000).toISOString() };
    const stored = new Map([["old.test", JSON.stringify(old)], ["bad.test", "{not json"]]);
    const r = recorder([{ policy: { id: false, mode: "none" }, status: "not_found" }, { policy: { id: false, mode: "none" }, status: "not_found" }]);
    const sts = new MtaStsPolicies(r.fetch, { stsPolicy: (d) => stored.get(d) ?? null, saveStsPolicy: () => {}, removeStsPolicy: () => {} });
    await sts.lookup("old.test", noDns, 1000);
    await sts.lookup("bad.test", noDns, 1000);
    expect(r.known).toEqual([null, null]);
  });
});
