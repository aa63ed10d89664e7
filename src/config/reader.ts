// A small typed walker over parsed YAML that records every problem with its key path,
// so one run of check-config reports all mistakes at once instead of the first.

import { parseDuration, parseSize } from "../units.ts";
import type { Secret } from "./types.ts";

/** Where secrets may come from; injected so tests need no real environment. */
export interface SecretSources {
  readonly vars: Readonly<Record<string, string | undefined>>;
  readFile(path: string): string;
}

export type Obj = Record<string, unknown>;

export class ConfigErrors extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

const describe = (v: unknown): string =>
  v === null || v === undefined ? "nothing" : Array.isArray(v) ? "a list" : typeof v === "object" ? "a mapping" : `${typeof v} ${JSON.stringify(v)}`;

export class Reader {
  readonly problems: string[] = [];

  fail(path: string, expected: string, found: unknown): undefined {
    this.problems.push(`${path}: expected ${expected}, found ${describe(found)}`);
    return undefined;
  }

  /** A mapping whose keys must all be in `known`; unknown keys are errors because a typo must not disable a protection. */
  section(value: unknown, path: string, known: readonly string[]): Obj {
    if (value === undefined || value === null) return {};
    if (typeof value !== "object" || Array.isArray(value)) {
      this.fail(path || "(top level)", "a mapping", value);
      return {};
    }
    for (const key of Object.keys(value)) {
      if (!known.includes(key)) {
        const hint = known.find((k) => similar(k, key));
        this.problems.push(
          `${join(path, key)}: unknown key${hint ? `; did you mean "${hint}"?` : `; known keys here: ${known.join(", ")}`}`,
        );
      }
    }
    return value as Obj;
  }

  string(obj: Obj, key: string, path: string, fallback: string): string {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string" || v.trim() === "") return this.fail(join(path, key), "a non-empty string", v) ?? fallback;
    return v;
  }

  int(obj: Obj, key: string, path: string, fallback: number, min: number, max: number): number {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      return this.fail(join(path, key), `an integer from ${min} to ${max}`, v) ?? fallback;
    }
    return v;
  }

  duration(obj: Obj, key: string, path: string, fallbackMs: number, minMs = 0): number {
    const v = obj[key];
    if (v === undefined || v === null) return fallbackMs;
    const ms = typeof v === "string" || typeof v === "number" ? parseDuration(v) : undefined;
    if (ms === undefined || ms < minMs) {
      return this.fail(join(path, key), `a duration such as "30s", "5m" or "1h"${minMs ? ` of at least ${minMs} ms` : ""}`, v) ?? fallbackMs;
    }
    return ms;
  }

  size(obj: Obj, key: string, path: string, fallback: number, min = 0): number {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    const bytes = typeof v === "string" || typeof v === "number" ? parseSize(v) : undefined;
    if (bytes === undefined || bytes < min) return this.fail(join(path, key), `a size such as "25MiB" or "512KiB" of at least ${min} bytes`, v) ?? fallback;
    return bytes;
  }

  list(obj: Obj, key: string, path: string): unknown[] | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) return this.fail(join(path, key), "a list", v);
    return v;
  }

  /**
   * A secret given as `key` (inline), `key_file` (file contents, trimmed) or `key_env`
   * (environment variable); at most one of them. Undefined when none is set.
   */
  secret(obj: Obj, key: string, path: string, env: SecretSources, minLength: number): Secret | undefined {
    const given = [key, `${key}_file`, `${key}_env`].filter((k) => obj[k] !== undefined && obj[k] !== null);
    if (given.length > 1) {
      this.problems.push(`${path}: set only one of ${given.map((k) => join(path, k)).join(", ")}`);
      return undefined;
    }
    const which = given[0];
    if (!which) return undefined;
    const raw = this.string(obj, which, path, "");
    if (!raw) return undefined;
    let value: string | undefined;
    let source: string;
    if (which === key) {
      value = raw;
      source = "inline";
    } else if (which.endsWith("_file")) {
      source = `file ${raw}`;
      try {
        value = env.readFile(raw).trim();
      } catch (err) {
        this.problems.push(`${join(path, which)}: cannot read ${raw}: ${(err as NodeJS.ErrnoException).code ?? err}`);
        return undefined;
      }
    } else {
      source = `environment variable ${raw}`;
      value = env.vars[raw];
      if (!value) {
        this.problems.push(`${join(path, which)}: environment variable ${raw} is not set or empty`);
        return undefined;
      }
    }
    if (value.length < minLength) {
      this.problems.push(`${join(path, which)}: the secret must be at least ${minLength} characters, found ${value.length}; generate one with: openssl rand -hex 32`);
      return undefined;
    }
    return { value, source };
  }

  oneOf<T extends string>(obj: Obj, key: string, path: string, choices: readonly T[], fallback: T): T {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string" || !choices.includes(v as T)) return this.fail(join(path, key), `one of ${choices.join(", ")}`, v) ?? fallback;
    return v as T;
  }
}

export const join = (path: string, key: string | number): string =>
  typeof key === "number" ? `${path}[${key}]` : path ? `${path}.${key}` : key;

function similar(a: string, b: string): boolean {
  if (Math.abs(a.length - b.length) > 2) return false;
  // Levenshtein distance <= 2 catches the typos that matter (max_conections, relay_network).
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]! <= 2;
}
