import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/parse.ts";
import { nextAttemptAt } from "../../src/queue/backoff.ts";

const MIN = 60_000;
const HOUR = 60 * MIN;
const NOW = Date.UTC(2024, 0, 1);
// The schedule a user gets without retry_schedule in the config.
const schedule = parseConfig({ hostname: "mx.example.org" }).queue.retryScheduleMs;

describe("nextAttemptAt with the default 12-step schedule", () => {
  test("the default schedule has 12 steps", () => {
    expect(schedule).toHaveLength(12);
  });

  test.each([
    [1, 5 * MIN],
    [2, 15 * MIN],
    [3, 30 * MIN],
    [4, 1 * HOUR],
    [5, 2 * HOUR],
    [6, 4 * HOUR],
    [7, 8 * HOUR],
    [8, 16 * HOUR],
    [9, 24 * HOUR],
    [10, 24 * HOUR],
    [11, 24 * HOUR],
    [12, 24 * HOUR],
  ])("after failure %p the next attempt is %p ms later", (failures, delay) => {
    expect(nextAttemptAt(schedule, failures, NOW)).toBe(NOW + delay);
  });

  test("after the 13th failure there is no next attempt", () => {
    expect(nextAttemptAt(schedule, 13, NOW)).toBeNull();
    expect(nextAttemptAt(schedule, 14, NOW)).toBeNull();
  });

  test("a message is given up on after about 5 days in total (RFC 5321 4.5.4.1: at least 4-5 days)", () => {
    let t = NOW;
    let failures = 0;
    for (let next = nextAttemptAt(schedule, ++failures, t); next !== null; next = nextAttemptAt(schedule, ++failures, t)) t = next;
    expect(failures).toBe(13);
    expect(t - NOW).toBe((5 + 15 + 30) * MIN + (1 + 2 + 4 + 8 + 16 + 24 * 4) * HOUR);
    expect((t - NOW) / (24 * HOUR)).toBeGreaterThan(5);
    expect((t - NOW) / (24 * HOUR)).toBeLessThan(5.5);
  });
});

describe("nextAttemptAt with a custom schedule", () => {
  test("single-step schedule: one retry, then give up", () => {
    expect(nextAttemptAt([30_000], 1, 1000)).toBe(31_000);
    expect(nextAttemptAt([30_000], 2, 1000)).toBeNull();
  });
});
