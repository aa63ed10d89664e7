// The acme section: defaults, every key checked with its path, and the precedence rules
// between ACME and certificate files.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { effectiveConfig } from "../../src/config/display.ts";
import { LETS_ENCRYPT_DIRECTORY } from "../../src/config/acme.ts";
import { parseConfig } from "../../src/config/parse.ts";
import { configProblems } from "../helpers/config-problems.ts";

const dir = mkdtempSync(join(tmpdir(), "mailraven-acme-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const caFile = join(dir, "ca.pem");
writeFileSync(caFile, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
writeFileSync(join(dir, "not-pem.txt"), "hello\n");

const parse = (doc: unknown) => parseConfig(doc, { cwd: dir });
const problemsOf = (doc: unknown): readonly string[] => configProblems(parse, doc);

const base = { hostname: "mx.example.org", state_dir: "/var/lib/mailraven" };
const acme = { enabled: true, email: "postmaster@example.org", hostnames: ["mx.example.org"] };

describe("acme section", () => {
  test("absent, or not enabled: no ACME", () => {
    expect(parse(base).acme).toBeNull();
    expect(parse({ ...base, acme: { enabled: false } }).acme).toBeNull();
    // Keys required only when enabled may be missing from a disabled section.
    expect(parse({ ...base, acme: { hostnames: ["mx.example.org"] } }).acme).toBeNull();
    expect(effectiveConfig(parse(base)).acme).toEqual({ enabled: false });
  });

  test("defaults: Let's Encrypt production, port 80, 30 days, built-in roots, state_dir/acme", () => {
    const c = parse({ ...base, acme }).acme!;
    expect(c).toEqual({
      directory: LETS_ENCRYPT_DIRECTORY,
      email: "postmaster@example.org",
      hostnames: ["mx.example.org"],
      httpListen: { host: "0.0.0.0", port: 80 },
      renewBeforeMs: 30 * 86_400_000,
      caFile: null,
      dir: "/var/lib/mailraven/acme",
    });
    expect(LETS_ENCRYPT_DIRECTORY).toBe("https://acme-v02.api.letsencrypt.org/directory");
  });

  test("every key given; names are lower-cased, IDNs made ASCII, duplicates dropped; relative ca_file from the config's directory", () => {
    const c = parse({
      ...base,
      acme: { ...acme, directory: "https://acme.internal:14000/dir", hostnames: ["MX.example.org", "smtp.bücher.example", "mx.example.org."], http_listen: "127.0.0.1:5002", renew_before: "10d", ca_file: "ca.pem" },
    }).acme!;
    expect(c.hostnames).toEqual(["mx.example.org", "smtp.xn--bcher-kva.example"]);
    expect(c.directory).toBe("https://acme.internal:14000/dir");
    expect(c.httpListen).toEqual({ host: "127.0.0.1", port: 5002 });
    expect(c.renewBeforeMs).toBe(10 * 86_400_000);
    expect(c.caFile).toBe(caFile);
    expect(effectiveConfig(parse({ ...base, acme: { ...acme, renew_before: "10d", http_listen: "[::]:80" } })).acme).toEqual({
      enabled: true,
      directory: LETS_ENCRYPT_DIRECTORY,
      email: "postmaster@example.org",
      hostnames: ["mx.example.org"],
      http_listen: "[::]:80",
      renew_before: "10d",
      ca_file: null,
    });
  });

  test("enabled without email and hostnames: both named", () => {
    const p = problemsOf({ ...base, acme: { enabled: true } });
    expect(p).toContainEqual(expect.stringMatching(/^acme\.email: required when acme\.enabled is true/));
    expect(p).toContainEqual(expect.stringMatching(/^acme\.hostnames: required when acme\.enabled is true/));
  });

  test.each([
    [{ enabled: "yes" }, "acme.enabled: expected true or false"],
    [{ directory: "http://acme.example/dir" }, "acme.directory: expected the https:// URL of an ACME directory"],
    [{ directory: "letsencrypt" }, "acme.directory: expected the https:// URL"],
    [{ email: "postmaster" }, "acme.email: expected an e-mail address"],
    [{ hostnames: "mx.example.org" }, "acme.hostnames: expected a list"],
    [{ hostnames: ["*.example.org"] }, 'acme.hostnames[0]: "*.example.org" is a wildcard; those need DNS-01'],
    [{ hostnames: ["mx"] }, "acme.hostnames[0]: expected a fully qualified host name"],
    [{ hostnames: ["192.0.2.1"] }, "acme.hostnames[0]: expected a fully qualified host name"],
    [{ hostnames: ["mx.example.org", 7] }, "acme.hostnames[1]: expected a fully qualified host name"],
    [{ http_listen: "port 80" }, "acme.http_listen: expected an address such as"],
    [{ http_listen: "127.0.0.1" }, "acme.http_listen: expected an address such as"],
    [{ renew_before: "soon" }, "acme.renew_before: expected a duration"],
    [{ renew_before: "10s" }, "acme.renew_before: expected a duration"],
    [{ ca_file: "missing.pem" }, `acme.ca_file: cannot read ${join(dir, "missing.pem")}: ENOENT`],
    [{ ca_file: "not-pem.txt" }, "acme.ca_file: " + join(dir, "not-pem.txt") + " holds no PEM certificate"],
    [{ renew_befor: "10d" }, 'acme.renew_befor: unknown key; did you mean "renew_before"?'],
  ])("%p is refused with its path", (bad, message) => {
    expect(problemsOf({ ...base, acme: { ...acme, ...bad } })).toContainEqual(expect.stringContaining(message));
  });

  test("more than 100 names do not fit in one certificate", () => {
    const hostnames = Array.from({ length: 101 }, (_, i) => `h${i}.example.org`);
    expect(problemsOf({ ...base, acme: { ...acme, hostnames } })).toContainEqual("acme.hostnames: at most 100 names fit in one certificate, found 101");
  });
});

describe("precedence between ACME and certificate files", () => {
  const files = { cert_file: "/etc/mailraven/tls/cert.pem", key_file: "/etc/mailraven/tls/key.pem" };

  test("smtp.tls and acme together are ambiguous: a config error naming both", () => {
    const p = problemsOf({ ...base, smtp: { tls: files }, acme });
    expect(p).toContainEqual(expect.stringMatching(/^smtp\.tls: set either smtp\.tls .* or acme\.enabled: true/));
  });

  test("smtp.tls with a disabled acme section is fine", () => {
    expect(parse({ ...base, smtp: { tls: files }, acme: { ...acme, enabled: false } }).smtp.tls).not.toBeNull();
  });

  test("submission without certificate files takes the ACME certificate (no config error)", () => {
    const c = parse({ ...base, acme, submission: {} });
    expect(c.submission!.certificates).toEqual([]);
    expect(problemsOf({ ...base, submission: {} })).toContainEqual(expect.stringMatching(/^submission\.certificates: submission needs a certificate/));
  });

  test("submission with its own certificate files keeps them", () => {
    const c = parse({ ...base, acme, submission: { certificates: [files] } });
    expect(c.submission!.certificates).toEqual([{ certFile: files.cert_file, keyFile: files.key_file }]);
  });
});
