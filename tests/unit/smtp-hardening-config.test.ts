// The smtp hardening keys (deadlines, content limits, error limit, stress) and
// queue.min_free_space: defaults, units, and errors that name the key and the fix.

import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/parse.ts";
import { effectiveConfig } from "../../src/config/display.ts";
import { configProblems } from "../helpers/config-problems.ts";

const parse = (doc: unknown) => parseConfig(doc, { cwd: "/etc/mailraven" });
const problemsOf = (doc: unknown): readonly string[] => configProblems(parse, doc);

describe("defaults (Postfix's where there is one)", () => {
  test("an empty document", () => {
    const { smtp, queue } = parse({});
    expect(smtp.dataTimeoutMs).toBe(600_000);
    expect(smtp.minDataRate).toBe(500);
    expect(smtp.nulBytes).toBe("strip");
    expect(smtp.maxHeaderSize).toBe(102_400);
    expect(smtp.maxHeaderSection).toBe(1_048_576);
    expect(smtp.errorLimit).toBe(20);
    expect(smtp.stress).toEqual({ threshold: 80, timeoutMs: 10_000, errorLimit: 1 });
    expect(queue.minFreeSpace).toBe(4 * 25 * 1024 * 1024);
  });

  test("min_free_space follows max_message_size unless set", () => {
    expect(parse({ smtp: { max_message_size: "10MiB" } }).queue.minFreeSpace).toBe(40 * 1024 * 1024);
    expect(parse({ smtp: { max_message_size: "10MiB" }, queue: { min_free_space: "1GiB" } }).queue.minFreeSpace).toBe(1024 ** 3);
    expect(parse({ queue: { min_free_space: 0 } }).queue.minFreeSpace).toBe(0);
  });

  test("explicit values, and check-config shows them with units", () => {
    const c = parse({
      smtp: { data_timeout: "2m", min_data_rate: "1KiB", nul_bytes: "reject", max_header_size: "64KiB", max_header_section: "512KiB", error_limit: 5, stress: { threshold: 0, timeout: "5s", error_limit: 2 } },
    });
    expect(c.smtp).toMatchObject({ dataTimeoutMs: 120_000, minDataRate: 1024, nulBytes: "reject", maxHeaderSize: 65_536, maxHeaderSection: 524_288, errorLimit: 5 });
    expect(c.smtp.stress).toEqual({ threshold: 0, timeoutMs: 5000, errorLimit: 2 });
    const shown = effectiveConfig(c) as { smtp: Record<string, unknown>; queue: Record<string, unknown> };
    expect(shown.smtp).toMatchObject({ data_timeout: "2m", min_data_rate: 1024, nul_bytes: "reject", max_header_size: "64KiB", max_header_section: "512KiB", error_limit: 5, stress: { threshold: 0, timeout: "5s", error_limit: 2 } });
    expect(shown.queue.min_free_space).toBe("100MiB");
  });
});

describe("errors name the key", () => {
  test("bad values", () => {
    expect(problemsOf({ smtp: { nul_bytes: "keep" } })).toEqual(['smtp.nul_bytes: expected one of strip, reject, found string "keep"']);
    expect(problemsOf({ smtp: { data_timeout: "soon" } })[0]).toStartWith("smtp.data_timeout: expected a duration");
    expect(problemsOf({ smtp: { stress: { threshold: 120 } } })).toEqual(["smtp.stress.threshold: expected an integer from 0 to 100, found number 120"]);
    expect(problemsOf({ smtp: { stress: { timout: "5s" } } })).toEqual(['smtp.stress.timout: unknown key; did you mean "timeout"?']);
    expect(problemsOf({ smtp: { error_limit: 0 } })).toEqual(["smtp.error_limit: expected an integer from 1 to 100000, found number 0"]);
    expect(problemsOf({ queue: { min_free_space: "lots" } })[0]).toStartWith("queue.min_free_space: expected a size");
  });

  test("a header section smaller than one header field", () => {
    expect(problemsOf({ smtp: { max_header_size: "200KiB", max_header_section: "100KiB" } })).toEqual([
      'smtp.max_header_section: expected a size at least smtp.max_header_size (204800 bytes), found string "100KiB"',
    ]);
  });
});
