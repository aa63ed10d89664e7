// Everything derived from one configuration that the running relay reads at the moment of
// use: the config itself, the check pipeline built from it, and the TLS material it names.
// SIGHUP builds a new Runtime and swaps it in whole, or keeps the old one if building fails.

import { readFileSync } from "node:fs";
import { buildPipeline, type PipelineServices } from "./checks/index.ts";
import type { Pipeline } from "./checks/types.ts";
import type { Config, TlsFiles } from "./config/types.ts";

export interface TlsMaterial {
  readonly key: Buffer;
  readonly cert: Buffer;
}

export interface Runtime {
  readonly config: Config;
  readonly pipeline: Pipeline;
  readonly smtpTls: TlsMaterial | null;
  readonly adminTls: TlsMaterial | null;
}

export function buildRuntime(config: Config, services: PipelineServices): Runtime {
  return {
    config,
    pipeline: buildPipeline(config, services),
    smtpTls: readTls(config.smtp.tls, "smtp.tls"),
    adminTls: readTls(config.admin.tls, "admin.tls"),
  };
}

function readTls(files: TlsFiles | null, key: string): TlsMaterial | null {
  if (!files) return null;
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${key}: cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  return { cert: read(files.certFile, "certificate"), key: read(files.keyFile, "private key") };
}
