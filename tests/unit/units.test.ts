import { describe, expect, test } from "bun:test";
import { formatDuration, parseDuration, parseSize } from "../../src/units.ts";

describe("parseDuration", () => {
  test.each([
    ["250ms", 250],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["2d", 172_800_000],
    ["1.5s", 1500],
    [" 10 s ", 10_000],
    ["5M", 300_000],
    ["1H", 3_600_000],
  ] as const)("%p is %p ms", (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  test("a bare number is seconds", () => {
    expect(parseDuration(30)).toBe(30_000);
    expect(parseDuration(0)).toBe(0);
    expect(parseDuration(0.5)).toBe(500);
  });

  test.each(["", "5", "s", "5 minutes", "-5s", "5x", "1h30m", "5s5", "1e3s", ".5s", "5 .s"])(
    "malformed %p is undefined",
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );

  test("negative or non-finite numbers are undefined", () => {
    expect(parseDuration(-1)).toBeUndefined();
    expect(parseDuration(Number.NaN)).toBeUndefined();
    expect(parseDuration(Number.POSITIVE_INFINITY)).toBeUndefined();
  });
});

describe("parseSize", () => {
  test.each([
    ["0", 0],
    ["512", 512],
    ["512b", 512],
    ["10k", 10_000],
    ["10KB", 10_000],
    ["10KiB", 10_240],
    ["25MiB", 25 * 1024 * 1024],
    ["25mib", 25 * 1024 * 1024],
    ["25MB", 25_000_000],
    ["25m", 25_000_000],
    ["1GiB", 1024 ** 3],
    ["1g", 1e9],
    ["1.5KiB", 1536],
    [" 2 MiB ", 2 * 1024 * 1024],
  ] as const)("%p is %p bytes", (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  test("a bare integer is bytes", () => {
    expect(parseSize(1024)).toBe(1024);
    expect(parseSize(0)).toBe(0);
  });

  test.each(["", "MiB", "25 megabytes", "25TiB", "-1", "25MiBs", "1,000", "0x10"])("malformed %p is undefined", (input) => {
    expect(parseSize(input)).toBeUndefined();
  });

  test("negative or fractional numbers are undefined", () => {
    expect(parseSize(-1)).toBeUndefined();
    expect(parseSize(1.5)).toBeUndefined();
    expect(parseSize(Number.NaN)).toBeUndefined();
  });
});

describe("formatDuration", () => {
  test.each([
    [0, "0ms"],
    [250, "250ms"],
    [1000, "1s"],
    [1500, "1500ms"],
    [90_000, "90s"],
    [300_000, "5m"],
    [5_400_000, "90m"],
    [3_600_000, "1h"],
    [86_400_000, "1d"],
    [90_000_000, "25h"],
  ] as const)("%p ms is %p", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  test("round-trips through parseDuration", () => {
    for (const ms of [1, 999, 1000, 61_000, 300_000, 7_200_000, 86_400_000, 172_800_000]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});
