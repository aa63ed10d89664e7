// Everything derived from one configuration that the running relay reads at the moment of
// use: the config itself, the check pipeline built from it, and the TLS material it names.
// SIGHUP builds a new Runtime and swaps it in whole, or keeps the old one if building fails;
// a new ACME certificate is swapped in the same way (withAcmeCertificate).

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

/**
 * `acme` is the current ACME certificate (null before the first one arrives). With acme
 * enabled it serves STARTTLS on the MX port (smtp.tls is then a config error) and submission
 * when submission.certificates is not set: certificate files win where they are given.
 */
export function buildRuntime(config: Config, services: PipelineServices, acme: TlsMaterial | null = null): Runtime {
  const files = {
    smtpTls: readTls(config.smtp.tls, "smtp.tls"),
    submissionTls: (config.submission?.certificates ?? []).map((f, i) => {
      const material = readTls(f, `submission.certificates[${i}]`)!;
      return { ...material, names: certificateNames(material.cert) };
    }),
  };
  return {
    config,
    pipeline: buildPipeline(config, services),
    ...withAcme(config, files, acme),
    adminTls: readTls(config.admin.tls, "admin.tls"),
    apiTls: readTls(config.api?.tls ?? null, "api.tls"),
  };
}

/** Reads every certificate and key the configuration names, as buildRuntime will: throws naming the one that cannot be read. */
export function checkTlsFiles(config: Config): void {
  readTls(config.smtp.tls, "smtp.tls");
  config.submission?.certificates.forEach((f, i) => readTls(f, `submission.certificates[${i}]`));
  readTls(config.admin.tls, "admin.tls");
  readTls(config.api?.tls ?? null, "api.tls");
}

/** The same runtime with a new ACME certificate in the listeners that use it. */
export function withAcmeCertificate(rt: Runtime, acme: TlsMaterial): Runtime {
  return { ...rt, ...withAcme(rt.config, rt, acme) };
}

type ListenerTls = Pick<Runtime, "smtpTls" | "submissionTls">;

function withAcme(config: Config, files: ListenerTls, acme: TlsMaterial | null): ListenerTls {
  if (!config.acme) return { smtpTls: files.smtpTls, submissionTls: files.submissionTls };
  const fromAcme = acme ? [{ ...acme, names: certificateNames(acme.cert) }] : [];
  return {
    smtpTls: config.smtp.tls ? files.smtpTls : acme,
    submissionTls: config.submission?.certificates.length ? files.submissionTls : config.submission ? fromAcme : [],
  };
}

/** The DNS names a certificate is good for (subjectAltName, or the CN without one). */
export function certificateNames(certificate: Buffer | string | X509Certificate): string[] {
  const cert = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
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
