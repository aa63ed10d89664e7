// What a config test asks most: which problems parseConfig names for a document it refuses.

import { expect } from "bun:test";
import { ConfigErrors } from "../../src/config/reader.ts";

/** The problems `parse` reports for `doc`; fails the test when the document is accepted. */
export function configProblems<T>(parse: (doc: T) => unknown, doc: T): readonly string[] {
  try {
    parse(doc);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigErrors);
    return (err as ConfigErrors).problems;
  }
  throw new Error("expected the configuration to be refused");
}
