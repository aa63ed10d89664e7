// A real DNS server for the tests: dnsmasq (Debian) on a loopback port, authoritative for the
// .test names it is given and NXDOMAIN for every other .test name. Plus a "black hole" that
// accepts queries and never answers, for timeout tests.

import { createSocket, type Socket } from "node:dgram";
import type { Subprocess } from "bun";

export interface DnsRecords {
  /** `--address`: also answers for every name below, and NXDOMAIN (not NODATA) for other types. */
  readonly a?: Record<string, string>;
  readonly aaaa?: Record<string, string>;
  /** Each entry is one TXT record; strings over 255 bytes are split as DNS requires. */
  readonly txt?: Record<string, string[]>;
  readonly mx?: Record<string, { host: string; pref: number }[]>;
  /** `--host-record`: exactly this name, IPv4 and IPv6 addresses; other types get NODATA, as from a real zone. */
  readonly hosts?: Record<string, string[]>;
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const quoteChunks = (value: string) => (value.match(/[\s\S]{1,255}/g) ?? [""]).join(",");

export class DnsServer {
  private log = "";
  /** Settles when dnsmasq's stderr has been read to its end. */
  private readonly drained: Promise<void>;

  private constructor(private readonly proc: Subprocess<"ignore", "pipe", "pipe">, readonly port: number) {
    this.drained = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stderr) this.log += decoder.decode(chunk, { stream: true });
    })();
  }

  /** How many queries of `type` for `name` the server has answered (from its query log). */
  queries(name: string, type = "A"): number {
    return this.log.split("\n").filter((l) => l.includes(`query[${type}] ${name} from`)).length;
  }

  /** "127.0.0.1:PORT", as mailraven's dns.servers takes it. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(records: DnsRecords, ttl = 60): Promise<DnsServer> {
    // The free UDP port may be taken over TCP, or grabbed by another test run in between:
    // dnsmasq then exits with "Address already in use", and another port is tried.
    for (let tries = 1; ; tries++) {
      try {
        return await DnsServer.startOn(await freeUdpPort(), records, ttl);
      } catch (err) {
        if (tries === 5 || !String((err as Error).message).includes("Address already in use")) throw err;
      }
    }
  }

  private static async startOn(port: number, records: DnsRecords, ttl: number): Promise<DnsServer> {
    const args = [
      "dnsmasq",
      "--keep-in-foreground",
      "--conf-file=/dev/null",
      "--no-resolv",
      "--no-hosts",
      "--no-poll",
      "--bind-interfaces",
      "--listen-address=127.0.0.1",
      `--port=${port}`,
      "--pid-file=",
      "--user=root",
      "--log-facility=-",
      "--log-queries",
      `--local-ttl=${ttl}`,
      // Everything under .test is ours: names we do not list are NXDOMAIN, never forwarded.
      "--local=/test/",
      "--local=/in-addr.arpa/",
      "--local=/ip6.arpa/",
    ];
    for (const [name, ip] of Object.entries(records.a ?? {})) args.push(`--address=/${name}/${ip}`);
    for (const [name, ip] of Object.entries(records.aaaa ?? {})) args.push(`--address=/${name}/${ip}`);
    for (const [name, values] of Object.entries(records.txt ?? {})) for (const v of values) args.push(`--txt-record=${name},${quoteChunks(v)}`);
    for (const [name, ips] of Object.entries(records.hosts ?? {})) for (const ip of ips) args.push(`--host-record=${name},${ip}`);
    for (const [name, mxs] of Object.entries(records.mx ?? {})) for (const m of mxs) args.push(`--mx-host=${name},${m.host},${m.pref}`);
    const proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const server = new DnsServer(proc, port);
    await server.waitReady();
    return server;
  }

  async stop(): Promise<void> {
    this.proc.kill();
    await this.proc.exited;
  }

  private async waitReady(): Promise<void> {
    const { Resolver } = await import("node:dns/promises");
    const r = new Resolver({ timeout: 200, tries: 1 });
    r.setServers([this.address]);
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await r.resolve4("ready-probe.test");
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOTFOUND") return; // an NXDOMAIN answer: it is serving
        if (this.proc.exitCode !== null) {
          await this.drained;
          throw new Error(`dnsmasq exited: ${this.log}`);
        }
        if (Date.now() > deadline) throw new Error(`dnsmasq did not answer on ${this.address}`);
        await Bun.sleep(20);
      }
    }
  }
}

/** A UDP port that swallows every query: lookups against it time out. */
export class BlackholeDns {
  private constructor(private readonly socket: Socket, readonly port: number) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(): Promise<BlackholeDns> {
    const socket = createSocket("udp4");
    socket.on("message", () => {});
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    return new BlackholeDns(socket, socket.address().port);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
