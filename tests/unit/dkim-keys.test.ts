// The DKIM key store on a real directory with real keys: file modes, no silent overwrite, the
// TXT records' formats, activation, and reload of changed keys without a restart.

import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createPrivateKey, createPublicKey, createVerify, sign, verify } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dkimCommand, defaultSelector, zoneLine } from "../../src/cli/dkim-cmd.ts";
import { CliError } from "../../src/cli/admin-client.ts";
import { UsageError } from "../../src/cli/commands.ts";
import type { Config } from "../../src/config/types.ts";
import { activateSelector, DkimKeyCache, DkimKeyError, generateKeys, loadKeys, publishedRecords, storeDomain, validSelector } from "../../src/dkim/keys.ts";

let root: string;
let dir: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "mailraven-dkim-"));
  dir = join(root, "dkim");
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const mode = (path: string) => statSync(path).mode & 0o777;
const pTag = (value: string) => Buffer.from(/p=([A-Za-z0-9+/=]+)$/.exec(value)![1]!, "base64");

describe("generateKeys", () => {
  test("writes RSA-2048 and Ed25519 PKCS#8 keys, 0600 in 0700 directories, and activates the first selector", () => {
    const r = generateKeys(dir, "Example.ORG.", "s1", ["rsa", "ed25519"]);
    expect(r).toMatchObject({ domain: "example.org", selector: "s1", active: true, activeSelector: "s1", replaced: [] });
    const domainDir = join(dir, "example.org");
    expect(mode(dir)).toBe(0o700);
    expect(mode(domainDir)).toBe(0o700);
    expect(readdirSync(domainDir).sort()).toEqual(["s1.ed25519.pem", "s1.rsa.pem", "selector"]);
    for (const f of readdirSync(domainDir)) expect(mode(join(domainDir, f))).toBe(0o600);
    expect(readFileSync(join(domainDir, "selector"), "utf8")).toBe("s1\n");

    const rsa = readFileSync(join(domainDir, "s1.rsa.pem"), "utf8");
    const ed = readFileSync(join(domainDir, "s1.ed25519.pem"), "utf8");
    expect(rsa).toStartWith("-----BEGIN PRIVATE KEY-----"); // PKCS#8, not "BEGIN RSA PRIVATE KEY"
    expect(ed).toStartWith("-----BEGIN PRIVATE KEY-----");
    expect(createPrivateKey(rsa).asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(createPrivateKey(ed).asymmetricKeyType).toBe("ed25519");
  });

  test("TXT records: RSA SubjectPublicKeyInfo under S, the raw 32-byte Ed25519 key under S-ed25519", () => {
    const r = generateKeys(dir, "example.org", "s1", ["rsa", "ed25519"]);
    const [rsa, ed] = r.records;
    expect(rsa!.name).toBe("s1._domainkey.example.org");
    expect(rsa!.selector).toBe("s1");
    expect(rsa!.value).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    expect(ed!.name).toBe("s1-ed25519._domainkey.example.org");
    expect(ed!.selector).toBe("s1-ed25519");
    expect(ed!.value).toMatch(/^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);

    // The published halves belong to the private keys on disk: a signature made with one
    // verifies with the other.
    const rsaPriv = createPrivateKey(readFileSync(join(dir, "example.org", "s1.rsa.pem")));
    const rsaPub = createPublicKey({ key: pTag(rsa!.value), format: "der", type: "spki" });
    const sig = sign("sha256", Buffer.from("hello"), rsaPriv);
    expect(createVerify("sha256").update("hello").verify(rsaPub, sig)).toBe(true);

    const raw = pTag(ed!.value);
    expect(raw.length).toBe(32); // RFC 8463: the bare key, not its 44-byte SubjectPublicKeyInfo
    const edPriv = createPrivateKey(readFileSync(join(dir, "example.org", "s1.ed25519.pem")));
    const edPub = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
    expect(verify(null, Buffer.from("hello"), edPub, sign(null, Buffer.from("hello"), edPriv))).toBe(true);
  });

  test("never replaces an existing key unless forced", () => {
    generateKeys(dir, "example.org", "s1", ["rsa", "ed25519"]);
    const before = readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8");
    expect(() => generateKeys(dir, "example.org", "s1", ["rsa"])).toThrow(DkimKeyError);
    expect(() => generateKeys(dir, "example.org", "s1", ["ed25519"])).toThrow(/already exists.*--force/);
    expect(readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8")).toBe(before);

    const r = generateKeys(dir, "example.org", "s1", ["rsa"], { force: true });
    expect(r).toMatchObject({ active: true, replaced: ["rsa"] });
    const after = readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8");
    expect(after).not.toBe(before);
    expect(mode(join(dir, "example.org", "s1.rsa.pem"))).toBe(0o600);
    expect(readdirSync(join(dir, "example.org")).filter((f) => f.includes("tmp"))).toEqual([]);
  });

  test("adds the missing kind to a selector without touching the other", () => {
    generateKeys(dir, "example.org", "s1", ["rsa"]);
    const rsa = readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8");
    const r = generateKeys(dir, "example.org", "s1", ["ed25519"]);
    expect(r.records.map((x) => x.kind)).toEqual(["ed25519"]);
    expect(readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8")).toBe(rsa);
    expect(loadKeys(dir, "example.org")!.keys.map((k) => k.algorithm)).toEqual(["rsa-sha256", "ed25519-sha256"]);
  });

  test("a second selector is prepared, not activated, until activateSelector", () => {
    generateKeys(dir, "example.org", "s1", ["rsa", "ed25519"]);
    const r = generateKeys(dir, "example.org", "s2", ["rsa", "ed25519"]);
    expect(r).toMatchObject({ active: false, activeSelector: "s1" });
    expect(loadKeys(dir, "example.org")!.selector).toBe("s1");
    expect(publishedRecords(dir, "example.org", "s2")).toMatchObject({ selector: "s2", active: false });
    expect(publishedRecords(dir, "example.org").records.map((x) => x.value)).not.toEqual(r.records.map((x) => x.value));
    expect(publishedRecords(dir, "example.org", "s2").records.map((x) => x.value)).toEqual(r.records.map((x) => x.value));

    activateSelector(dir, "example.org", "s2");
    expect(loadKeys(dir, "example.org")!.selector).toBe("s2");
    expect(() => activateSelector(dir, "example.org", "s3")).toThrow(/no keys for selector s3/);
  });

  test("refuses names that are not a domain or a usable selector", () => {
    for (const bad of ["..", "../etc", "a/b", "", "exa mple.org", "-x.org"]) expect(() => generateKeys(dir, bad, "s1", ["rsa"])).toThrow(DkimKeyError);
    for (const bad of ["S1", "a.b", "-s", "s-", "x-ed25519", "a".repeat(56), "s_1"]) {
      expect(validSelector(bad)).toBe(false);
      expect(() => generateKeys(dir, "example.org", bad, ["ed25519"])).toThrow(DkimKeyError);
    }
    expect(validSelector("mr202611")).toBe(true);
    expect(storeDomain("Mail.Example.ORG.")).toBe("mail.example.org");
    expect(storeDomain("../x")).toBeNull();
    expect(storeDomain("Bücher.test")).toBe("xn--bcher-kva.test");
  });
});

describe("loadKeys", () => {
  test("null for a domain without keys, an invalid name, or no selector file", () => {
    expect(loadKeys(dir, "example.org")).toBeNull(); // no key directory at all
    generateKeys(dir, "example.org", "s1", ["ed25519"]);
    expect(loadKeys(dir, "other.org")).toBeNull();
    expect(loadKeys(dir, "../dkim/example.org")).toBeNull();
    expect(loadKeys(dir, "sub.example.org")).toBeNull(); // exact domain only
    rmSync(join(dir, "example.org", "selector"));
    expect(loadKeys(dir, "example.org")).toBeNull();
  });

  test("the active selector's keys, RSA first, with DNS selectors and PEMs", () => {
    generateKeys(dir, "example.org", "s1", ["rsa", "ed25519"]);
    const k = loadKeys(dir, "EXAMPLE.org")!;
    expect(k.domain).toBe("example.org");
    expect(k.selector).toBe("s1");
    expect(k.keys.map((x) => [x.kind, x.selector, x.algorithm])).toEqual([
      ["rsa", "s1", "rsa-sha256"],
      ["ed25519", "s1-ed25519", "ed25519-sha256"],
    ]);
    expect(k.keys[0]!.pem).toBe(readFileSync(join(dir, "example.org", "s1.rsa.pem"), "utf8"));
  });

  test("cached while the files stay the same; a keygen or an edit shows at the next lookup", () => {
    const cache = new DkimKeyCache();
    const loadKeys = (d: string, domain: string) => cache.load(d, domain);
    generateKeys(dir, "example.org", "s1", ["rsa"]);
    const first = loadKeys(dir, "example.org")!;
    expect(loadKeys(dir, "example.org")).toBe(first); // same object: served from the cache

    // A new kind for the active selector.
    generateKeys(dir, "example.org", "s1", ["ed25519"]);
    const second = loadKeys(dir, "example.org")!;
    expect(second).not.toBe(first);
    expect(second.keys.map((x) => x.kind)).toEqual(["rsa", "ed25519"]);

    // Keys replaced in place, within the same millisecond as the lookup.
    generateKeys(dir, "example.org", "s1", ["rsa"], { force: true });
    const third = loadKeys(dir, "example.org")!;
    expect(third.keys[0]!.pem).not.toBe(second.keys[0]!.pem);

    // The selector file edited by hand (same size: only the times and content change).
    generateKeys(dir, "example.org", "s2", ["ed25519"]);
    writeFileSync(join(dir, "example.org", "selector"), "s2\n");
    expect(loadKeys(dir, "example.org")!.keys.map((x) => x.selector)).toEqual(["s2-ed25519"]);

    // The keys removed: nothing to sign with.
    rmSync(join(dir, "example.org", "s2.ed25519.pem"));
    expect(loadKeys(dir, "example.org")).toBeNull();
  });

  test("a domain without keys is remembered for a few seconds, then looked at again", () => {
    let t = 1_000_000;
    const cache = new DkimKeyCache(() => t);
    expect(cache.load(dir, "late.example")).toBeNull();
    generateKeys(dir, "late.example", "s1", ["ed25519"]);
    expect(cache.load(dir, "late.example")).toBeNull(); // still believed missing
    t += 5_001;
    expect(cache.load(dir, "late.example")!.selector).toBe("s1");
  });

  test("a broken key file is an error, not a silent null", () => {
    generateKeys(dir, "example.org", "s1", ["rsa"]);
    writeFileSync(join(dir, "example.org", "s1.rsa.pem"), "not a key\n");
    expect(() => loadKeys(dir, "example.org")).toThrow(/not a private key/);
    generateKeys(dir, "example.org", "s9", ["ed25519"]);
    writeFileSync(join(dir, "example.org", "s9.rsa.pem"), readFileSync(join(dir, "example.org", "s9.ed25519.pem")));
    writeFileSync(join(dir, "example.org", "selector"), "s9\n");
    expect(() => loadKeys(dir, "example.org")).toThrow(/expecting an rsa key, found ed25519/);
  });
});

describe("mailraven dkim", () => {
  const config = () => ({ stateDir: root, outbound: { dkimDir: dir } }) as unknown as Config;
  const run = async (positionals: string[], flags: Partial<{ selector: string; rsaOnly: boolean; ed25519Only: boolean; force: boolean; json: boolean }> = {}) => {
    let text = "";
    const code = await dkimCommand(config(), { positionals, rsaOnly: false, ed25519Only: false, force: false, json: false, ...flags }, (s) => (text += s), new Date("2026-11-21T08:00:00Z"));
    return { code, text };
  };

  test("keygen prints zone-file records, RSA split into 255-byte strings", async () => {
    const { code, text } = await run(["keygen", "example.org"]);
    expect(code).toBe(0);
    expect(defaultSelector(new Date("2026-11-21T08:00:00Z"))).toBe("mr202611");
    const lines = text.split("\n");
    expect(lines[0]).toMatch(/^; example\.org's mail is signed with selector mr202611/);
    const rsa = /^mr202611\._domainkey\.example\.org\.\tIN\tTXT\t\( ("[^"]*")\n\t("[^"]*") \)$/m.exec(text);
    expect(rsa).not.toBeNull();
    const strings = [rsa![1]!, rsa![2]!].map((s) => s.slice(1, -1));
    expect(strings[0]!.length).toBe(255);
    expect(strings.join("")).toBe(loadRecord("rsa"));
    expect(text).toMatch(/^mr202611-ed25519\._domainkey\.example\.org\.\tIN\tTXT\t"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$/m);
  });

  test("keygen of a second selector says how to activate it; --json; errors are one line", async () => {
    await run(["keygen", "example.org"], { selector: "s1", rsaOnly: true });
    const second = await run(["keygen", "example.org"], { selector: "s2", json: true });
    const body = JSON.parse(second.text);
    expect(body).toMatchObject({ domain: "example.org", selector: "s2", active: false, active_selector: "s1" });
    expect(body.records.map((r: { name: string }) => r.name)).toEqual(["s2._domainkey.example.org", "s2-ed25519._domainkey.example.org"]);
    for (const r of body.records) expect(r.strings.join("")).toBe(r.value);

    const text = (await run(["keygen", "example.org"], { selector: "s3" })).text;
    expect(text).toContain("still signed with selector s1");
    expect(text).toContain("mailraven dkim activate example.org s3");

    await expect(run(["keygen", "example.org"], { selector: "s1", rsaOnly: true })).rejects.toThrow(CliError);
    await expect(run(["keygen", "example.org"], { rsaOnly: true, ed25519Only: true })).rejects.toThrow(/exclude each other/);
    await expect(run(["keygen"])).rejects.toThrow(/mailraven dkim keygen takes one DOMAIN/);
    await expect(run(["keygen", "example.org", "extra"])).rejects.toThrow(UsageError);
    await expect(run(["frobnicate"])).rejects.toThrow(/unknown dkim command/);

    expect((await run(["activate", "example.org", "s3"])).text).toContain("signed with selector s3");
    expect(loadKeys(dir, "example.org")!.selector).toBe("s3");
    expect((await run(["records", "example.org"])).text).toStartWith("; selector s3 (active)\n");
  });

  test("zoneLine keeps short values in one string", () => {
    expect(zoneLine({ kind: "ed25519", selector: "a-ed25519", name: "a-ed25519._domainkey.x.org", value: "v=DKIM1; k=ed25519; p=AAAA" })).toBe('a-ed25519._domainkey.x.org.\tIN\tTXT\t"v=DKIM1; k=ed25519; p=AAAA"\n');
  });

  function loadRecord(kind: "rsa" | "ed25519"): string {
    return publishedRecords(dir, "example.org").records.find((r) => r.kind === kind)!.value;
  }
});
