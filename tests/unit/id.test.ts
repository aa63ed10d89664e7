import { describe, expect, test } from "bun:test";
import { isQueueId, QueueIdGenerator } from "../../src/queue/id.ts";

const generator = new QueueIdGenerator();
const newQueueId = (t?: number) => generator.next(t);

describe("newQueueId", () => {
  test("is 16 characters of Crockford base32", () => {
    for (let i = 0; i < 100; i++) {
      const id = newQueueId();
      expect(id).toHaveLength(16);
      expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{16}$/);
      expect(isQueueId(id)).toBe(true);
    }
  });

  test("sorts by creation time, as a string", () => {
    const times = [0, 1, 31, 32, 1_000, 1_700_000_000_000, 1_700_000_000_001, 1_700_000_086_400, 2_000_000_000_000, 4_102_444_800_000];
    const ids = times.map((t) => newQueueId(t));
    expect([...ids].sort()).toEqual(ids);
  });

  test("ids made in consecutive milliseconds sort in order", () => {
    const base = Date.UTC(2024, 5, 1);
    const ids = Array.from({ length: 2000 }, (_, i) => newQueueId(base + i));
    expect([...ids].sort()).toEqual(ids);
  });

  test("ids made in the same millisecond are distinct and sort in creation order", () => {
    const t = Date.UTC(2024, 5, 1, 12);
    const ids = Array.from({ length: 500 }, () => newQueueId(t));
    expect(new Set(ids).size).toBe(500);
    expect([...ids].sort()).toEqual(ids);
  });

  test("the time prefix is the same within a millisecond and differs across", () => {
    const t = Date.UTC(2024, 5, 1, 12);
    expect(newQueueId(t).slice(0, 9)).toBe(newQueueId(t).slice(0, 9));
    expect(newQueueId(t).slice(0, 9)).not.toBe(newQueueId(t + 1).slice(0, 9));
  });

  test("unique over 10,000 calls, even within the same millisecond", () => {
    const now = Date.now();
    const same = new Set(Array.from({ length: 10_000 }, () => newQueueId(now)));
    expect(same.size).toBe(10_000);
    const live = new Set(Array.from({ length: 10_000 }, () => newQueueId()));
    expect(live.size).toBe(10_000);
  });

  test("the default time is now", () => {
    const before = newQueueId(Date.now() - 1).slice(0, 9);
    const id = newQueueId().slice(0, 9);
    const after = newQueueId(Date.now() + 1).slice(0, 9);
    expect(id >= before && id <= after).toBe(true);
  });
});

describe("isQueueId", () => {
  test.each(["", "0123456789ABCDE", "0123456789ABCDEFG", "0123456789abcdef", "0123456789ABCDEI", "0123456789ABCDEL", "0123456789ABCDEO", "0123456789ABCDEU", "../../etc/passwd"])(
    "%p is not a queue id",
    (s) => {
      expect(isQueueId(s)).toBe(false);
    },
  );
});
