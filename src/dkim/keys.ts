// The DKIM key store: private keys on disk, one directory per signing domain, and the DNS
// records that publish their public halves.
//
//   <dkim_dir>/                        0700
//     example.org/                     0700, the domain in lower-case ASCII (A-labels)
//       selector                       0600, the active selector: "mr202611\n"
//       mr202611.rsa.pem               0600, RSA-2048, PKCS#8 PEM
//       mr202611.ed25519.pem           0600, Ed25519, PKCS#8 PEM
//
// A selector S names a pair of keys. DNS holds one key record per selector name, so the two
// kinds are published under two names (RFC 8463 section 4.2 asks signers to use both):
//   RSA      S._domainkey.<domain>           v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>
//   Ed25519  S-ed25519._domainkey.<domain>   v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>
//
// Only the selector named in the `selector` file signs; keys of other selectors are kept (so a
// rotation can be prepared and published before it is used). The file is written when a
// domain's first keys are generated, and by `mailraven dkim activate`: a new key that signs
// before its record is in DNS fails at every receiver, so a rotation never switches by itself.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { chmodSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { domainToASCII } from "node:url";
import { fsyncPath } from "../fsync.ts";

export type KeyKind = "rsa" | "ed25519";

export const KEY_KINDS: readonly KeyKind[] = ["rsa", "ed25519"];

export interface DkimKey {
  readonly kind: KeyKind;
  /** The DNS selector (s= tag): S for RSA, S-ed25519 for Ed25519. */
  readonly selector: string;
  readonly algorithm: "rsa-sha256" | "ed25519-sha256";
  readonly privateKey: KeyObject;
  /** The same key as PKCS#8 PEM, as mailauth takes it. */
  readonly pem: string;
}

/** The keys that sign a domain's mail: those of its active selector, RSA first. */
export interface DkimKeys {
  readonly domain: string;
  readonly selector: string;
  readonly keys: readonly DkimKey[];
}

/** One TXT record to publish. `value` is the whole record; DNS needs it split in 255-byte strings. */
export interface TxtRecord {
  readonly kind: KeyKind;
  readonly selector: string;
  /** Without the final dot: "S._domainkey.example.org". */
  readonly name: string;
  readonly value: string;
}

export interface GenerateOptions {
  /** Replace keys that exist for this selector (the default refuses to). */
  readonly force?: boolean;
}

export interface GenerateResult {
  readonly domain: string;
  readonly selector: string;
  readonly records: readonly TxtRecord[];
  /** The selector is now the active one (the domain's first keys, or its active keys replaced). */
  readonly active: boolean;
  /** The selector that signs the domain's mail now. */
  readonly activeSelector: string;
  /** Kinds whose existing key was replaced (opts.force). */
  readonly replaced: readonly KeyKind[];
}

/** A problem an operator can fix (bad domain or selector, a key in the way); one line of text. */
export class DkimKeyError extends Error {}

const ED25519_SUFFIX = "-ed25519";
const SELECTOR_FILE = "selector";
const keyFile = (selector: string, kind: KeyKind) => `${selector}.${kind}.pem`;

/** The DNS selector of a key kind under a selector. */
export function dnsSelector(selector: string, kind: KeyKind): string {
  return kind === "rsa" ? selector : `${selector}${ED25519_SUFFIX}`;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * A domain as the key store names it (IDNs as A-labels), or null: lower-case ASCII labels
 * only, so a name taken from a message header can never point outside the store ("..", "/").
 */
export function storeDomain(domain: string): string | null {
  const lower = domain.trim().replace(/\.$/, "").toLowerCase();
  const d = /^[\x00-\x7f]*$/.test(lower) ? lower : domainToASCII(lower);
  if (d.length === 0 || d.length > 253) return null;
  return d.split(".").every((l) => LABEL.test(l)) ? d : null;
}

/**
 * Selectors are one DNS label of lower-case letters, digits and inner hyphens (RFC 6376 3.1
 * allows dots too; we do not, to keep the file names flat), short enough for the -ed25519
 * suffix, and not ending in it (S-ed25519 would then clash with another selector's RSA name).
 */
export function validSelector(selector: string): boolean {
  return /^[a-z0-9](?:[a-z0-9-]{0,53}[a-z0-9])?$/.test(selector) && !selector.endsWith(ED25519_SUFFIX);
}

/**
 * Generates keys of the given kinds for a selector and returns the TXT records to publish.
 * Existing keys of the selector are refused unless opts.force (nothing is written then).
 */
export function generateKeys(dir: string, domain: string, selector: string, kinds: readonly KeyKind[], opts: GenerateOptions = {}): GenerateResult {
  const d = storeDomain(domain);
  if (!d) throw new DkimKeyError(`"${domain}" is not a domain name (expecting e.g. example.org)`);
  if (!validSelector(selector)) throw new DkimKeyError(`"${selector}" is not a usable selector: one DNS label of a-z, 0-9 and inner hyphens, at most 55 characters, not ending in ${ED25519_SUFFIX}`);
  if (kinds.length === 0) throw new DkimKeyError("no key kind to generate");
  const domainDir = join(dir, d);
  const existing = kinds.filter((k) => statSync(join(domainDir, keyFile(selector, k)), { throwIfNoEntry: false }));
  if (existing.length && !opts.force) {
    throw new DkimKeyError(`${existing.map((k) => join(domainDir, keyFile(selector, k))).join(" and ")} already exist${existing.length === 1 ? "s" : ""}: choose another selector, or replace with --force`);
  }

  ensureDir(dir);
  ensureDir(domainDir);
  const records: TxtRecord[] = [];
  for (const kind of kinds) {
    const { privateKey, publicKey } = kind === "rsa" ? generateKeyPairSync("rsa", { modulusLength: 2048 }) : generateKeyPairSync("ed25519");
    writePrivate(domainDir, keyFile(selector, kind), privateKey.export({ type: "pkcs8", format: "pem" }).toString(), !!opts.force);
    records.push(txtRecord(d, selector, kind, publicKey));
  }

  let activeSelector = readSelector(domainDir);
  if (activeSelector === null) {
    writePrivate(domainDir, SELECTOR_FILE, `${selector}\n`, true);
    activeSelector = selector;
  }
  fsyncPath(domainDir);
  return { domain: d, selector, records, active: activeSelector === selector, activeSelector, replaced: existing };
}

/** Makes a selector whose keys exist the one that signs the domain's mail. */
export function activateSelector(dir: string, domain: string, selector: string): DkimKeys {
  const d = storeDomain(domain);
  if (!d) throw new DkimKeyError(`"${domain}" is not a domain name`);
  if (!validSelector(selector)) throw new DkimKeyError(`"${selector}" is not a usable selector`);
  const domainDir = join(dir, d);
  const keys = readKeys(domainDir, d, selector);
  if (keys.keys.length === 0) throw new DkimKeyError(`no keys for selector ${selector} in ${domainDir}; generate them first with mailraven dkim keygen ${d} --selector ${selector}`);
  writePrivate(domainDir, SELECTOR_FILE, `${selector}\n`, true);
  fsyncPath(domainDir);
  return keys;
}

/** The TXT records for the keys of a selector (default: the active one) that exist on disk. */
export function publishedRecords(dir: string, domain: string, selector?: string): { selector: string; active: boolean; records: TxtRecord[] } {
  const d = storeDomain(domain);
  if (!d) throw new DkimKeyError(`"${domain}" is not a domain name`);
  const domainDir = join(dir, d);
  const active = readSelector(domainDir);
  const s = selector ?? active;
  if (s === null) throw new DkimKeyError(`no active selector for ${d} (no ${join(domainDir, SELECTOR_FILE)}); generate keys with mailraven dkim keygen ${d}`);
  if (!validSelector(s)) throw new DkimKeyError(`"${s}" is not a usable selector`);
  const keys = readKeys(domainDir, d, s);
  if (keys.keys.length === 0) throw new DkimKeyError(`no keys for selector ${s} in ${domainDir}`);
  return { selector: s, active: s === active, records: keys.keys.map((k) => txtRecord(d, s, k.kind, createPublicKey(k.privateKey))) };
}

function txtRecord(domain: string, selector: string, kind: KeyKind, publicKey: KeyObject): TxtRecord {
  // RSA: the DER SubjectPublicKeyInfo (RFC 6376 3.6.1). Ed25519: the bare 32-byte key, not its
  // SubjectPublicKeyInfo (RFC 8463 section 4.2); the JWK "x" member is exactly that key.
  const p = kind === "rsa" ? publicKey.export({ type: "spki", format: "der" }).toString("base64") : Buffer.from(String(publicKey.export({ format: "jwk" }).x), "base64url").toString("base64");
  const s = dnsSelector(selector, kind);
  return { kind, selector: s, name: `${s}._domainkey.${domain}`, value: `v=DKIM1; k=${kind}; p=${p}` };
}

/** How long "this domain has no keys" is believed before the directory is looked at again. */
const MISSING_TTL_MS = 5_000;

/**
 * Keys are looked up for every signed message; this cache makes that a few stat() calls. An
 * entry is reused while the selector file and the active key files are the very same files
 * (inode, size, change and modification times), so `mailraven dkim keygen` or `activate` on a
 * running relay takes effect with the next message, without a restart or a reload. A domain
 * without keys is remembered for a few seconds, so mail from unsigned domains costs no I/O.
 * One cache lives in the relay's pipeline services.
 */
export class DkimKeyCache {
  private readonly entries = new Map<string, { stamp: string; keys: DkimKeys }>();
  private readonly missing = new Map<string, number>();
  /** Whether a keys directory holds any domain, and until when that answer stands. */
  private readonly dirs = new Map<string, { any: boolean; until: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * The signing keys of a domain (its active selector's), or null when the domain has no
   * directory, no selector file, or no key file for the selector. Exact domain only: mail from
   * a subdomain is signed only if the subdomain has keys of its own. Throws when a file exists
   * but cannot be read or parsed.
   */
  load(dir: string, domain: string): DkimKeys | null {
    const d = storeDomain(domain);
    if (!d) return null;
    const domainDir = join(dir, d);
    const cacheKey = `${dir}\0${d}`;
    const missingUntil = this.missing.get(cacheKey);
    if (missingUntil !== undefined && missingUntil > this.now()) return null;
    this.missing.delete(cacheKey);
    const cached = this.entries.get(cacheKey);
    if (cached && cached.stamp === stampOf(domainDir, cached.keys.selector)) return cached.keys;

    const selector = readSelector(domainDir);
    if (selector === null) return this.none(cacheKey);
    // The stamp is taken before the files are read: a change while reading shows at the next call.
    const stamp = stampOf(domainDir, selector);
    if (!validSelector(selector)) throw new DkimKeyError(`${join(domainDir, SELECTOR_FILE)} names "${selector}", which is not a usable selector`);
    const keys = readKeys(domainDir, d, selector);
    if (keys.keys.length === 0) return this.none(cacheKey);
    this.entries.set(cacheKey, { stamp, keys });
    return keys;
  }

  /**
   * False when `dir` holds no domain at all (looked at again after MISSING_TTL_MS, like a domain
   * without keys): a relay that signs nothing then parses no From: field to find out.
   */
  anyDomain(dir: string): boolean {
    const known = this.dirs.get(dir);
    if (known && known.until > this.now()) return known.any;
    let any: boolean;
    try {
      any = readdirSync(dir).length > 0;
    } catch {
      any = false;
    }
    this.dirs.set(dir, { any, until: this.now() + MISSING_TTL_MS });
    return any;
  }

  private none(cacheKey: string): null {
    this.entries.delete(cacheKey);
    // Bounded: a flood of distinct From: domains must not grow this without end.
    if (this.missing.size > 10_000) this.missing.clear();
    this.missing.set(cacheKey, this.now() + MISSING_TTL_MS);
    return null;
  }
}

/** An uncached lookup, for the command line and tests. */
export function loadKeys(dir: string, domain: string): DkimKeys | null {
  return new DkimKeyCache().load(dir, domain);
}

function stampOf(domainDir: string, selector: string): string {
  return [SELECTOR_FILE, ...KEY_KINDS.map((k) => keyFile(selector, k))]
    .map((name) => {
      const st = statSync(join(domainDir, name), { bigint: true, throwIfNoEntry: false });
      return st ? `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : "-";
    })
    .join("/");
}

function readSelector(domainDir: string): string | null {
  try {
    return readFileSync(join(domainDir, SELECTOR_FILE), "utf8").trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

function readKeys(domainDir: string, domain: string, selector: string): DkimKeys {
  const keys: DkimKey[] = [];
  for (const kind of KEY_KINDS) {
    const path = join(domainDir, keyFile(selector, kind));
    let pem: string;
    try {
      pem = readFileSync(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(pem);
    } catch (err) {
      throw new DkimKeyError(`${path}: not a private key in PEM form (${(err as Error).message})`);
    }
    if (privateKey.asymmetricKeyType !== kind) throw new DkimKeyError(`${path}: expecting an ${kind} key, found ${privateKey.asymmetricKeyType}`);
    keys.push({ kind, selector: dnsSelector(selector, kind), algorithm: kind === "rsa" ? "rsa-sha256" : "ed25519-sha256", privateKey, pem });
  }
  return { domain, selector, keys };
}

function ensureDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  chmodSync(path, 0o700);
}

/**
 * Writes a file with mode 0600 durably under a temporary name, then puts it in place: by
 * rename when replacing is allowed, else by link(), which fails if the name exists, so a key
 * that appeared meanwhile is not overwritten either.
 */
function writePrivate(dir: string, name: string, content: string, replace: boolean): void {
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, 0o600);
  const target = join(dir, name);
  if (replace) {
    renameSync(tmp, target);
    return;
  }
  try {
    linkSync(tmp, target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new DkimKeyError(`${target} already exists; not replaced`);
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}
