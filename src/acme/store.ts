// The ACME state on disk, under state_dir/acme (0700): the account key, and the certificate's
// private key and chain, keys 0600. Files are replaced by rename, so a crash leaves either
// the old file or the new one; a key that does not match its certificate (a crash between the
// two renames) makes the pair unusable, and a new certificate is ordered.

import { createPrivateKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { fsyncPath } from "../fsync.ts";
import { certificateNames } from "../runtime.ts";

const ACCOUNT_KEY = "account.key";
const CERT_KEY = "certificate.key";
const CERT_CHAIN = "certificate.pem";
/** Which directory (CA) issued the certificate: a change of CA orders a new one. */
const CERT_META = "certificate.json";

/** A certificate with its key, as served, and what the renewal schedule needs to know. */
export interface Certificate {
  readonly key: Buffer;
  /** The leaf first, then the intermediates. */
  readonly cert: Buffer;
  readonly names: readonly string[];
  readonly serial: string;
  readonly issuer: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** The ACME directory it came from; null when unknown. */
  readonly directory: string | null;
}

/** Reads a key and chain; throws when they do not parse or do not belong together. */
export function parseCertificate(key: Buffer, chain: Buffer, directory: string | null): Certificate {
  const leaf = new X509Certificate(chain);
  if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error("the private key does not match the certificate");
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) throw new Error(`unreadable validity dates ${leaf.validFrom} - ${leaf.validTo}`);
  const issuer = /CN=([^\n,]+)/.exec(leaf.issuer)?.[1] ?? leaf.issuer;
  return { key, cert: chain, names: certificateNames(chain), serial: leaf.serialNumber.toLowerCase(), issuer, notBefore, notAfter, directory };
}

export class AcmeStore {
  constructor(readonly dir: string) {}

  /** The directory, made 0700 (and tightened if it was looser). */
  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
  }

  /** The account key (ECDSA P-256, PEM), made on first use. */
  accountKey(): Buffer {
    const path = join(this.dir, ACCOUNT_KEY);
    if (existsSync(path)) return readFileSync(path);
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = Buffer.from(privateKey.export({ type: "pkcs8", format: "pem" }));
    this.write(ACCOUNT_KEY, pem, 0o600);
    fsyncPath(this.dir);
    return pem;
  }

  /** The cached certificate; null when there is none, or an error saying why it cannot be used. */
  load(): Certificate | null | Error {
    const keyPath = join(this.dir, CERT_KEY);
    const chainPath = join(this.dir, CERT_CHAIN);
    if (!existsSync(keyPath) && !existsSync(chainPath)) return null;
    try {
      let directory: string | null = null;
      try {
        directory = (JSON.parse(readFileSync(join(this.dir, CERT_META), "utf8")) as { directory?: string }).directory ?? null;
      } catch {
        // No record of the CA: the certificate is still good to serve; it is replaced when due.
      }
      return parseCertificate(readFileSync(keyPath), readFileSync(chainPath), directory);
    } catch (err) {
      return new Error(`${this.dir}: the cached certificate cannot be used: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  save(cert: Certificate): void {
    this.ensureDir();
    this.write(CERT_KEY, cert.key, 0o600);
    this.write(CERT_CHAIN, cert.cert, 0o644);
    this.write(CERT_META, Buffer.from(`${JSON.stringify({ directory: cert.directory, names: cert.names, serial: cert.serial, not_after: new Date(cert.notAfter).toISOString() })}\n`), 0o644);
    fsyncPath(this.dir);
  }

  private write(name: string, data: Buffer, mode: number): void {
    const tmp = join(this.dir, `.${name}.tmp`);
    // A leftover from a crash may have another mode; the key is never written into it.
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, "w", mode);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // The mode given to open is masked by the umask; the key must be 0600 whatever it is.
    chmodSync(tmp, mode);
    renameSync(tmp, join(this.dir, name));
  }
}
