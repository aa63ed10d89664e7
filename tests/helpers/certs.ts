// Certificates for TLS tests, made with openssl in a temp dir: a throwaway CA that issues
// certificates for given names (trusted by the relay through NODE_EXTRA_CA_CERTS), and
// self-signed ones that nothing trusts.

import { readFileSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";

export interface KeyPair {
  readonly key: string;
  readonly cert: string;
}

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr.toString()}`);
}

const read = (dir: string, name: string): KeyPair => ({ key: readFileSync(join(dir, `${name}.key`), "utf8"), cert: readFileSync(join(dir, `${name}.pem`), "utf8") });

export class TestCa {
  private serial = 0;
  private constructor(readonly dir: string) {}

  /** The CA certificate's path: the value for NODE_EXTRA_CA_CERTS. */
  get certFile(): string {
    return join(this.dir, "ca.pem");
  }

  static create(dir: string): TestCa {
    openssl(
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mailraven test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
      dir,
    );
    return new TestCa(dir);
  }

  /** A certificate for `names` (subjectAltName DNS entries, or IP entries for addresses) signed by this CA. */
  issue(names: string[]): KeyPair {
    const name = `leaf${++this.serial}`;
    writeFileSync(join(this.dir, `${name}.ext`), `subjectAltName=${names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(",")}\n`);
    openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${names[0]}`], this.dir);
    openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", String(this.serial + 1000), "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`], this.dir);
    return read(this.dir, name);
  }
}

/** A self-signed certificate for `name`: valid name, untrusted issuer. */
export function selfSigned(dir: string, name: string): KeyPair {
  const base = `self-${name}`;
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${base}.key`, "-out", `${base}.pem`, "-days", "2", "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`], dir);
  return read(dir, base);
}
