// A DNS stub resolver over UDP (TCP when the answer is truncated), built on dns-packet.
// Why not node:dns: under Bun, resolveTxt splits one multi-string TXT record into several
// records (oven-sh/bun#21370), which breaks every DKIM key longer than 255 bytes; and we
// need TTLs, per-lookup timeouts and servers with ports (tests, split horizon) anyway.

import { createSocket } from "node:dgram";
import { connect, isIPv6 } from "node:net";
import * as packet from "dns-packet";
import { answersQuestion, fromServer, randomId, recordsFor, type Decoded, type Question } from "./reply.ts";

export type RecordType = "A" | "AAAA" | "TXT" | "MX" | "PTR" | "CNAME" | "NS";

/** Error codes as node:dns names them, which mailauth and the checks understand. */
export type DnsErrorCode = "ENOTFOUND" | "ENODATA" | "ESERVFAIL" | "EREFUSED" | "ETIMEOUT" | "EBADRESP";

export class DnsError extends Error {
  constructor(readonly code: DnsErrorCode, readonly hostname: string) {
    super(`${code} ${hostname}`);
  }
  /** NXDOMAIN and NODATA are answers ("nothing there"); the rest are failures. */
  get isNegative(): boolean {
    return this.code === "ENOTFOUND" || this.code === "ENODATA";
  }
}

export interface DnsServerAddress {
  readonly host: string;
  readonly port: number;
}

export interface ResolverOptions {
  readonly servers: readonly DnsServerAddress[];
  readonly timeoutMs: number;
  /** Rounds over the server list before giving up. */
  readonly attempts: number;
}

export interface Answer<T> {
  readonly records: T[];
  /** The smallest TTL of the answer, in seconds. */
  readonly ttl: number;
}

export class Resolver {
  constructor(private readonly opts: ResolverOptions) {}

  async a(name: string): Promise<Answer<string>> {
    return this.records(name, "A", (d) => String(d));
  }

  async aaaa(name: string): Promise<Answer<string>> {
    return this.records(name, "AAAA", (d) => String(d));
  }

  /** Each TXT record's strings joined, as RFC 7208 3.3 and RFC 6376 3.6.2.2 require. */
  async txt(name: string): Promise<Answer<string>> {
    return this.records(name, "TXT", (d) => (Array.isArray(d) ? d : [d]).map((b) => Buffer.from(b as Uint8Array).toString("utf8")).join(""));
  }

  async mx(name: string): Promise<Answer<{ exchange: string; priority: number }>> {
    return this.records(name, "MX", (d) => {
      const mx = d as { exchange: string; preference: number };
      return { exchange: mx.exchange, priority: mx.preference };
    });
  }

  async ptr(name: string): Promise<Answer<string>> {
    return this.records(name, "PTR", (d) => String(d));
  }

  /** The resolver function mailauth takes: node:dns shaped results, node:dns error codes. */
  readonly forMailauth = async (name: string, rrtype: string): Promise<unknown> => {
    switch (rrtype.toUpperCase()) {
      case "A":
        return (await this.a(name)).records;
      case "AAAA":
        return (await this.aaaa(name)).records;
      case "TXT":
        return (await this.txt(name)).records.map((r) => [r]);
      case "MX":
        return (await this.mx(name)).records;
      case "PTR":
        return (await this.ptr(name)).records;
      default:
        return this.records(name, rrtype.toUpperCase() as RecordType, (d) => d).then((a) => a.records);
    }
  };

  private async records<T>(name: string, type: RecordType, map: (data: unknown) => T): Promise<Answer<T>> {
    const res = await this.query(name, type);
    const answers = recordsFor(res, name, type);
    if (answers.length === 0) throw new DnsError("ENODATA", name);
    return {
      records: answers.map((a) => map((a as { data: unknown }).data)),
      ttl: Math.min(...answers.map((a) => (a as { ttl?: number }).ttl ?? 0)),
    };
  }

  async query(name: string, type: RecordType): Promise<Decoded> {
    let lastError: DnsError = new DnsError("ETIMEOUT", name);
    for (let round = 0; round < this.opts.attempts; round++) {
      for (const server of this.opts.servers) {
        try {
          const res = await this.exchange(server, name, type);
          const rcode = (res as { rcode?: string }).rcode ?? "NOERROR";
          if (rcode === "NXDOMAIN") throw new DnsError("ENOTFOUND", name);
          if (rcode === "REFUSED") lastError = new DnsError("EREFUSED", name);
          else if (rcode !== "NOERROR") lastError = new DnsError("ESERVFAIL", name);
          else return res;
        } catch (err) {
          if (err instanceof DnsError && err.code === "ENOTFOUND") throw err;
          lastError = err instanceof DnsError ? err : new DnsError("EBADRESP", name);
        }
      }
    }
    throw lastError;
  }

  private async exchange(server: DnsServerAddress, name: string, type: RecordType): Promise<Decoded> {
    const q: Question = { id: randomId(), name, type };
    const query = packet.encode({ type: "query", id: q.id, flags: packet.RECURSION_DESIRED, questions: [{ type, name }] });
    const res = await this.udp(server, query, q);
    // Truncated: ask again over TCP for the whole answer (RFC 7766), with a new id.
    if ((res.flags ?? 0) & packet.TRUNCATED_RESPONSE) {
      const again: Question = { ...q, id: randomId() };
      return this.tcp(server, packet.encode({ type: "query", id: again.id, flags: packet.RECURSION_DESIRED, questions: [{ type, name }] }), again);
    }
    return res;
  }

  private udp(server: DnsServerAddress, query: Buffer, q: Question): Promise<Decoded> {
    const name = q.name;
    return new Promise((resolve, reject) => {
      const socket = createSocket(isIPv6(server.host) ? "udp6" : "udp4");
      const done = (err: DnsError | null, res?: Decoded) => {
        clearTimeout(timer);
        socket.close();
        err ? reject(err) : resolve(res!);
      };
      const timer = setTimeout(() => done(new DnsError("ETIMEOUT", name)), this.opts.timeoutMs);
      socket.on("error", () => done(new DnsError("ESERVFAIL", name)));
      socket.on("message", (msg, rinfo) => {
        // Only the server asked, answering our own question, counts: spoofed, stale or
        // mismatched datagrams are dropped and the real answer is still awaited.
        if (!fromServer(rinfo, server)) return;
        let res: Decoded;
        try {
          res = packet.decode(msg);
        } catch {
          return; // not a DNS answer: keep waiting for the real one
        }
        if (!answersQuestion(res, q)) return;
        done(null, res);
      });
      socket.send(query, server.port, server.host);
    });
  }

  private tcp(server: DnsServerAddress, query: Buffer, q: Question): Promise<Decoded> {
    const name = q.name;
    return new Promise((resolve, reject) => {
      const socket = connect({ host: server.host, port: server.port });
      const chunks: Buffer[] = [];
      const done = (err: DnsError | null, res?: Decoded) => {
        clearTimeout(timer);
        socket.destroy();
        err ? reject(err) : resolve(res!);
      };
      const timer = setTimeout(() => done(new DnsError("ETIMEOUT", name)), this.opts.timeoutMs);
      socket.on("error", () => done(new DnsError("ESERVFAIL", name)));
      socket.on("connect", () => socket.write(Buffer.concat([Buffer.from([query.length >> 8, query.length & 0xff]), query])));
      socket.on("data", (d: Buffer) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (all.length < 2 || all.length < 2 + all.readUInt16BE(0)) return;
        try {
          const res = packet.decode(all.subarray(2, 2 + all.readUInt16BE(0)));
          // One connection, one question: anything but its answer is a broken or hostile server.
          answersQuestion(res, q) ? done(null, res) : done(new DnsError("EBADRESP", name));
        } catch {
          done(new DnsError("EBADRESP", name));
        }
      });
    });
  }
}

/** Name servers from /etc/resolv.conf (the default when dns.servers is not set). */
export function systemServers(resolvConf: string): DnsServerAddress[] {
  const servers = [...resolvConf.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => ({ host: m[1]!.replace(/%.*$/, ""), port: 53 }));
  return servers.length ? servers : [{ host: "127.0.0.1", port: 53 }];
}

/** The name to look up in a DNS list for an address: reversed octets, or nibbles for IPv6. */
export function reverseName(ip: string): string | null {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (v4) return `${v4[4]}.${v4[3]}.${v4[2]}.${v4[1]}`;
  if (!isIPv6(ip)) return null;
  const halves = ip.split("::");
  const groups = (s: string | undefined) => (s ? s.split(":") : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  const full = [...head, ...Array<string>(8 - head.length - tail.length).fill("0"), ...tail].map((g) => g.padStart(4, "0"));
  return full.join("").split("").reverse().join(".");
}
