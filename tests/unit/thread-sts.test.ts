// The delivery thread reaches the MTA-STS policy store through the SMTP thread (thread-sts.ts).

import { describe, expect, test } from "bun:test";
import type { StsStore } from "../../src/deliver/mta-sts.ts";
import { RemoteStsStore, serveStsRequest, type StsRequest } from "../../src/deliver/thread-sts.ts";

/** Both sides joined as the two threads are, with a turn of the loop between them. */
function joined(store: StsStore | null): { remote: RemoteStsStore; sent: StsRequest[] } {
  const sent: StsRequest[] = [];
  const remote: RemoteStsStore = new RemoteStsStore((request) => {
    sent.push(request);
    queueMicrotask(() => serveStsRequest(store, request, (answer) => queueMicrotask(() => remote.answered(answer))));
  });
  return { remote, sent };
}

describe("MTA-STS policies across the thread boundary", () => {
  test("a saved policy is read back; a removed one is gone; answers find their own question", async () => {
    const saved = new Map<string, string>();
    const store: StsStore = {
      stsPolicy: async (d) => saved.get(d) ?? null,
      saveStsPolicy: (d, json) => void saved.set(d, json),
      removeStsPolicy: (d) => void saved.delete(d),
    };
    const { remote } = joined(store);
    remote.saveStsPolicy("a.test", '{"id":"a"}', Date.now() + 60_000);
    remote.saveStsPolicy("b.test", '{"id":"b"}', Date.now() + 60_000);
    await Bun.sleep(0);
    expect(await Promise.all([remote.stsPolicy("b.test"), remote.stsPolicy("a.test"), remote.stsPolicy("c.test")])).toEqual(['{"id":"b"}', '{"id":"a"}', null]);
    remote.removeStsPolicy("a.test");
    await Bun.sleep(0);
    expect(await remote.stsPolicy("a.test")).toBeNull();
  });

  test("a store that fails, or none at all, is a miss (the policy is fetched), never a stuck delivery", async () => {
    const failing: StsStore = {
      stsPolicy: () => {
        throw new Error("redis down");
      },
      saveStsPolicy: () => {},
      removeStsPolicy: () => {},
    };
    expect(await joined(failing).remote.stsPolicy("a.test")).toBeNull();
    expect(await joined(null).remote.stsPolicy("a.test")).toBeNull();
  });
});
