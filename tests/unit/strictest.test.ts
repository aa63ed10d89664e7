// One reply serves every recipient of a message, so the strictest per-domain authentication
// policy among the recipients' domains applies (strictest in src/checks/index.ts).

import { describe, expect, test } from "bun:test";
import { strictest } from "../../src/checks/index.ts";
import type { AuthPolicy } from "../../src/config/types.ts";

const LAX: AuthPolicy = { spfFail: "tag", dmarcReject: false, tempError: "accept" };
const STRICT: AuthPolicy = { spfFail: "reject", dmarcReject: true, tempError: "defer" };

describe("strictest", () => {
  test("no per-domain overrides: the base policy", () => {
    expect(strictest(LAX, [])).toEqual(LAX);
    expect(strictest(STRICT, [])).toEqual(STRICT);
  });

  test("domains without overrides inherit the base", () => {
    expect(strictest(STRICT, [{}, {}])).toEqual(STRICT);
    expect(strictest(LAX, [{}])).toEqual(LAX);
  });

  test("one domain asking for more makes the whole message stricter, setting by setting", () => {
    expect(strictest(LAX, [{}, { spfFail: "reject" }])).toEqual({ ...LAX, spfFail: "reject" });
    expect(strictest(LAX, [{ dmarcReject: true }, {}])).toEqual({ ...LAX, dmarcReject: true });
    expect(strictest(LAX, [{}, {}, { tempError: "defer" }])).toEqual({ ...LAX, tempError: "defer" });
  });

  test("a domain asking for less only gets it when every domain does", () => {
    const relaxed: Partial<AuthPolicy> = { spfFail: "tag", dmarcReject: false, tempError: "accept" };
    expect(strictest(STRICT, [relaxed])).toEqual(LAX);
    expect(strictest(STRICT, [relaxed, relaxed])).toEqual(LAX);
    expect(strictest(STRICT, [relaxed, {}])).toEqual(STRICT);
  });

  test("settings are combined independently across domains", () => {
    expect(strictest(LAX, [{ spfFail: "reject" }, { dmarcReject: true }])).toEqual({ spfFail: "reject", dmarcReject: true, tempError: "accept" });
    expect(strictest(STRICT, [{ dmarcReject: false, tempError: "accept" }, { spfFail: "tag", tempError: "accept" }])).toEqual({
      spfFail: "reject",
      dmarcReject: true,
      tempError: "accept",
    });
  });
});
