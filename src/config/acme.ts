// The acme section: a certificate for STARTTLS and submission from an ACME CA (RFC 8555),
// obtained and renewed by src/acme/ with HTTP-01 challenges.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { domainToASCII } from "node:url";
import { join, Reader } from "./reader.ts";
import type { AcmeConfig, ListenAddress } from "./types.ts";

export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";
const KEYS = ["enabled", "directory", "email", "hostnames", "http_listen", "renew_before", "ca_file"];
/** Let's Encrypt's limit of names per certificate. */
const MAX_NAMES = 100;

export function parseAcme(
  r: Reader,
  value: unknown,
  stateDir: string,
  cwd: string,
  isHostname: (name: string) => boolean,
  listen: (text: string, path: string) => ListenAddress | undefined,
): AcmeConfig | null {
  const path = "acme";
  if (value === undefined || value === null) return null;
  const o = r.section(value, path, KEYS);
  const enabled = o.enabled ?? false;
  if (typeof enabled !== "boolean") r.fail(join(path, "enabled"), "true or false", enabled);
  // A disabled section is still checked, so turning it on later finds no surprise; only the
  // keys that are required when enabled are not.
  const directory = r.string(o, "directory", path, LETS_ENCRYPT_DIRECTORY);
  if (!isHttpsUrl(directory)) r.fail(join(path, "directory"), 'the https:// URL of an ACME directory such as "https://acme-v02.api.letsencrypt.org/directory"', directory);
  const email = r.string(o, "email", path, "");
  if (email && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) r.fail(join(path, "email"), "an e-mail address such as postmaster@example.org", email);
  if (!email && enabled === true) r.problems.push(`${join(path, "email")}: required when acme.enabled is true; the CA writes to it about expiring certificates and account problems`);
  const hostnames = names(r, r.list(o, "hostnames", path), join(path, "hostnames"), isHostname);
  if (hostnames.length === 0 && enabled === true) r.problems.push(`${join(path, "hostnames")}: required when acme.enabled is true: the names the certificate is for, such as [mx.example.org]`);
  const httpListen = listen(r.string(o, "http_listen", path, "0.0.0.0:80"), join(path, "http_listen"));
  const renewBeforeMs = r.duration(o, "renew_before", path, 30 * 86_400_000, 60_000);
  const caFile = o.ca_file === undefined || o.ca_file === null ? null : resolve(cwd, r.string(o, "ca_file", path, ""));
  if (caFile) checkCaFile(r, caFile, join(path, "ca_file"));
  if (enabled !== true) return null;
  // A bad http_listen is already a problem; the fallback only keeps other checks quiet.
  return { directory, email, hostnames, httpListen: httpListen ?? { host: "0.0.0.0", port: 80 }, renewBeforeMs, caFile, dir: resolve(stateDir, "acme") };
}

/** Certificate files and ACME both naming the certificate of port 25 would leave one of them unused, silently. */
export function checkAcmePrecedence(r: Reader, acme: AcmeConfig | null, smtpTls: unknown): void {
  if (acme && smtpTls !== undefined && smtpTls !== null) {
    r.problems.push("smtp.tls: set either smtp.tls (certificate files) or acme.enabled: true (a certificate from the CA), not both; with acme the ACME certificate serves STARTTLS on smtp.listen, and submission too unless submission.certificates is set");
  }
}

function names(r: Reader, list: unknown[] | undefined, path: string, isHostname: (name: string) => boolean): string[] {
  const out: string[] = [];
  (list ?? []).forEach((item, i) => {
    const text = typeof item === "string" ? item.trim().toLowerCase().replace(/\.$/, "") : "";
    if (text.startsWith("*.")) return void r.problems.push(`${join(path, i)}: "${item}" is a wildcard; those need DNS-01 challenges, mailraven answers HTTP-01 only: list each name`);
    const ascii = text ? domainToASCII(text) : "";
    // A certificate for a bare label or an IP address is not what mail clients check against.
    if (!ascii || !isHostname(ascii) || !ascii.includes(".") || /^[\d.]+$/.test(ascii)) return void r.fail(join(path, i), "a fully qualified host name such as mx.example.org", item);
    if (!out.includes(ascii)) out.push(ascii);
  });
  if (out.length > MAX_NAMES) r.problems.push(`${path}: at most ${MAX_NAMES} names fit in one certificate, found ${out.length}`);
  return out;
}

function isHttpsUrl(text: string): boolean {
  try {
    return new URL(text).protocol === "https:";
  } catch {
    return false;
  }
}

function checkCaFile(r: Reader, file: string, path: string): void {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    r.problems.push(`${path}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    return;
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) r.problems.push(`${path}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
}
