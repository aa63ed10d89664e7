// Pebble (Let's Encrypt's ACME test server, Debian package "pebble") on loopback for the ACME
// tests. Debian ships neither Pebble's test certificate nor its "minica" CA, so a throwaway CA
// made here signs the certificate Pebble serves its directory with (127.0.0.1); the relay
// trusts it through acme.ca_file. Pebble validates HTTP-01 challenges at
// http://<name>:<httpPort>/, resolving <name> with the DNS server it is given.

import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import type { Subprocess } from "bun";

export interface PebbleOptions {
  /** "127.0.0.1:PORT": where Pebble resolves the names it validates (tests/helpers/dns.ts). */
  readonly dnsServer: string;
  /** The port Pebble fetches HTTP-01 challenges from: the relay's acme.http_listen port. */
  readonly httpPort: number;
  /** Lifetime of the certificates it issues; Pebble's default is 5 years. */
  readonly validitySeconds?: number;
}

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr.toString()}`);
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => (s.destroy(), resolve(false)));
  });
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export class Pebble {
  private log = "";
  private readonly drained: Promise<void>;

  private constructor(
    private readonly proc: Subprocess<"ignore", "pipe", "pipe">,
    readonly port: number,
    readonly managementPort: number,
    /** The CA that signed Pebble's HTTPS certificate: the relay's acme.ca_file. */
    readonly caFile: string,
  ) {
    const decoder = new TextDecoder();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        this.log += decoder.decode(chunk, { stream: true });
      }
    };
    this.drained = Promise.all([pump(proc.stdout), pump(proc.stderr)]).then(() => {});
  }

  get directory(): string {
    return `https://127.0.0.1:${this.port}/dir`;
  }

  /** Certificates issued so far ("Issued certificate serial ... for order ..." lines). */
  issued(): string[] {
    return [...this.log.matchAll(/Issued certificate serial ([0-9a-f]+) for order/g)].map((m) => m[1]!);
  }

  /** New orders placed so far. */
  orders(): number {
    return this.log.split("\n").filter((l) => l.includes("POST /order-plz")).length;
  }

  /** The intermediate that signs the certificates (regenerated at every Pebble start). */
  async intermediate(): Promise<X509Certificate> {
    const res = await fetch(`https://127.0.0.1:${this.managementPort}/intermediates/0`, { tls: { ca: readFileSync(this.caFile, "utf8") } });
    return new X509Certificate(await res.text());
  }

  static async start(dir: string, opts: PebbleOptions): Promise<Pebble> {
    openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mailraven test CA for pebble",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
    writeFileSync(join(dir, "pebble.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "pebble.key", "-out", "pebble.csr", "-subj", "/CN=localhost"], dir);
    openssl(["x509", "-req", "-in", "pebble.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "1", "-out", "pebble.pem", "-days", "2", "-extfile", "pebble.ext"], dir);
    // A free port can be taken by someone else before Pebble binds it: then it exits, and
    // another pair of ports is tried.
    for (let tries = 1; ; tries++) {
      try {
        return await Pebble.startOn(dir, opts, await freePort(), await freePort());
      } catch (err) {
        if (tries === 3 || !/address already in use/i.test((err as Error).message)) throw err;
      }
    }
  }

  private static async startOn(dir: string, opts: PebbleOptions, port: number, managementPort: number): Promise<Pebble> {
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: join(dir, "pebble.pem"),
        privateKey: join(dir, "pebble.key"),
        httpPort: opts.httpPort,
        tlsPort: await freePort(),
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        ...(opts.validitySeconds ? { certificateValidityPeriod: opts.validitySeconds } : {}),
      },
    };
    writeFileSync(join(dir, "pebble-config.json"), JSON.stringify(config));
    const proc = Bun.spawn(["pebble", "-config", join(dir, "pebble-config.json"), "-dnsserver", opts.dnsServer], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      // No random waits before validating (up to 15 s each otherwise).
      env: { ...process.env, PEBBLE_VA_NOSLEEP: "1" },
    });
    const pebble = new Pebble(proc, port, managementPort, join(dir, "ca.pem"));
    try {
      await pebble.ready();
    } catch (err) {
      await pebble.stop();
      throw err;
    }
    return pebble;
  }

  async stop(): Promise<void> {
    this.proc.kill();
    await this.proc.exited;
  }

  /**
   * Pebble logs "ACME directory available" before it has bound its ports, so that line is not
   * the signal: both ports must accept connections, and the directory must answer.
   */
  private async ready(): Promise<void> {
    const deadline = Date.now() + 30_000;
    const ca = readFileSync(this.caFile, "utf8");
    for (;;) {
      if (this.proc.exitCode !== null) {
        await this.drained;
        throw new Error(`pebble exited: ${this.log}`);
      }
      if ((await accepts(this.port)) && (await accepts(this.managementPort))) {
        const res = await fetch(this.directory, { tls: { ca } }).catch(() => null);
        if (res?.ok && ((await res.json()) as { newOrder?: string }).newOrder) return;
      }
      if (Date.now() > deadline) throw new Error(`pebble did not serve its directory on ${this.port} within 30 s: ${this.log}`);
      await Bun.sleep(50);
    }
  }
}
