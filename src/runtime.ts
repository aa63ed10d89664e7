// Everything derived from one configuration that the running relay reads at the moment of
// use: the config itself, the check pipeline built from it, and the TLS material it names.
// SIGHUP builds a new Runtime and swaps it in whole, or keeps the old one if building fails.

import { X509Certificate } from "node:crypto";
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
  readonly apiTls: TlsMaterial | null;
  /** Submission certificates with the host names each serves (SNI), the default first. */
  readonly submissionTls: readonly (TlsMaterial & { readonly names: readonly string[] })[];
}

export function buildRuntime(config: Config, services: PipelineServices): Runtime {
  return {
    config,
    pipeline: buildPipeline(config, services),
    smtpTls: readTls(config.smtp.tls, "smtp.tls"),
    adminTls: readTls(config.admin.tls, "admin.tls"),
    apiTls: readTls(config.api?.tls ?? null, "api.tls"),
    submissionTls: (config.submission?.certificates ?? []).map((files, i) => {
      const material = readTls(files, `submission.certificates[${i}]`)!;
      return { ...material, names: certificateNames(material.cert) };
    }),
  };
}

/** The DNS names a certificate is good for (subjectAltName, or the CN without one). */
function certificateNames(pem: Buffer): string[] {
  const cert = new X509Certificate(pem);
  const san = (cert.subjectAltName ?? "").split(/,\s*/).filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4).toLowerCase());
  if (san.length) return san;
  const cn = /CN=([^,\n]+)/.exec(cert.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
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
