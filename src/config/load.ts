// Reads the YAML file (or the embedded default) and returns a validated Config.
// Every failure is a ConfigErrors naming the file, the key and the fix.

import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { EMBEDDED_CONFIG } from "./defaults.ts";
import { parseConfig } from "./parse.ts";
import { ConfigErrors } from "./reader.ts";
import type { Config } from "./types.ts";

export const DEFAULT_CONFIG_PATH = "/etc/mailraven/mailraven.yaml";

export type ConfigSource = { kind: "file"; path: string } | { kind: "embedded" };

export function loadConfig(source: ConfigSource, cwd = process.cwd()): Config {
  if (source.kind === "embedded") return parseConfig(parseYaml(EMBEDDED_CONFIG, "(embedded default)"), { cwd });
  let text: string;
  try {
    text = readFileSync(source.path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file; pass --config PATH or run with --embedded-config for a local trial" : code === "EACCES" ? "permission denied" : String(err);
    throw new ConfigErrors([`${source.path}: cannot read the configuration file: ${why}`]);
  }
  // Relative paths inside the file are taken relative to the file itself, not to wherever the
  // service happened to be started from. parseYaml's problem already names the file.
  const doc = parseYaml(text, source.path);
  try {
    return parseConfig(doc, { cwd: dirname(source.path) });
  } catch (err) {
    if (err instanceof ConfigErrors) throw new ConfigErrors(err.problems.map((p) => `${source.path}: ${p}`));
    throw err;
  }
}

function parseYaml(text: string, name: string): unknown {
  try {
    return Bun.YAML.parse(text);
  } catch (err) {
    throw new ConfigErrors([`${name}: not valid YAML: ${(err as Error).message}`]);
  }
}
