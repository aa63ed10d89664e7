// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) a TCP load
// balancer sends before anything else, naming the client it accepted the connection from.
// Only read from smtp.proxy_protocol.trusted peers (listener.ts); from anyone else it is a
// forgery (connection-adapter.ts refuses it). Bounded: a v1 line is at most 107 bytes, a v2
// header at most MAX_V2_LENGTH, and the whole header must arrive within a deadline.

import { isIPv4, isIPv6, type Socket } from "node:net";
import { formatIp, parseIp } from "../net/cidr.ts";

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from("PROXY ");
/** proxy-protocol.txt 2.1: "a receiver may reject an incoming connection showing more than 107 characters". */
const V1_MAX = 107;
/** The addresses need at most 216 bytes; TLVs (which we ignore) get some room beyond. */
const MAX_V2_LENGTH = 16 + 2048;

export class ProxyHeaderError extends Error {}

/** The client the load balancer speaks for; null: use the connection's own address (LOCAL, UNKNOWN). */
export type ProxySource = { readonly address: string; readonly port: number } | null;

export type ParseResult = { readonly done: false } | { readonly done: true; readonly source: ProxySource; readonly length: number };

const MORE: ParseResult = { done: false };

/** Parses a header at the start of `buf`: done with its length, or more bytes needed. Throws ProxyHeaderError. */
export function parseProxyHeader(buf: Buffer): ParseResult {
  if (startsLike(buf, V2_SIGNATURE)) return buf.length < 16 ? MORE : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? MORE : parseV1(buf);
  throw new ProxyHeaderError("the connection did not start with a PROXY protocol header");
}

/** `buf` and `prefix` agree on their common length. */
function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.subarray(0, n).equals(prefix.subarray(0, n));
}

function parseV1(buf: Buffer): ParseResult {
  const end = buf.indexOf("\r\n");
  if (end === -1) {
    if (buf.length >= V1_MAX) throw new ProxyHeaderError("PROXY v1 header longer than 107 bytes");
    return MORE;
  }
  if (end + 2 > V1_MAX) throw new ProxyHeaderError("PROXY v1 header longer than 107 bytes");
  const fields = buf.toString("latin1", 0, end).split(" ");
  const length = end + 2;
  if (fields[1] === "UNKNOWN") return { done: true, source: null, length };
  const [, proto, src, dst, sport, dport] = fields;
  const family = proto === "TCP4" ? isIPv4 : proto === "TCP6" ? isIPv6 : null;
  if (fields.length !== 6 || !family || !family(src!) || !family(dst!) || !isPort(sport!) || !isPort(dport!)) {
    throw new ProxyHeaderError("malformed PROXY v1 header");
  }
  return { done: true, source: { address: normalize(src!), port: Number(sport) }, length };
}

function isPort(s: string): boolean {
  return /^(0|[1-9]\d{0,4})$/.test(s) && Number(s) <= 65535;
}

function parseV2(buf: Buffer): ParseResult {
  const verCmd = buf[12]!;
  const fam = buf[13]!;
  const length = 16 + buf.readUInt16BE(14);
  if (verCmd >> 4 !== 2) throw new ProxyHeaderError("PROXY v2 header with an unknown version");
  if (length > MAX_V2_LENGTH) throw new ProxyHeaderError("PROXY v2 header too long");
  if (buf.length < length) return MORE;
  const cmd = verCmd & 0x0f;
  // LOCAL: the balancer's own connection (a health check); UNSPEC: no address given.
  if (cmd === 0x0) return { done: true, source: null, length };
  if (cmd !== 0x1) throw new ProxyHeaderError("PROXY v2 header with an unknown command");
  if (fam === 0x00) return { done: true, source: null, length };
  if (fam === 0x11 && length >= 16 + 12) {
    const a = buf.subarray(16, 20);
    return { done: true, source: { address: `${a[0]}.${a[1]}.${a[2]}.${a[3]}`, port: buf.readUInt16BE(24) }, length };
  }
  if (fam === 0x21 && length >= 16 + 36) {
    return { done: true, source: { address: normalize(formatIp({ v6: true, value: BigInt(`0x${buf.toString("hex", 16, 32)}`) })), port: buf.readUInt16BE(48) }, length };
  }
  // UDP and unix sockets are not SMTP clients.
  throw new ProxyHeaderError("PROXY v2 header for a protocol other than TCP over IPv4 or IPv6");
}

/** IPv4-mapped IPv6 is the IPv4 address, as for directly connected clients; IPv6 in its short form. */
function normalize(ip: string): string {
  const lower = ip.toLowerCase();
  if (lower.startsWith("::ffff:") && isIPv4(lower.slice(7))) return lower.slice(7);
  const parsed = parseIp(lower);
  return parsed ? formatIp(parsed) : lower;
}

/**
 * Reads the header from a new connection within `timeoutMs` and leaves whatever followed it
 * (the client's first bytes, a TLS ClientHello) in the socket for the session.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxySource> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (err: Error | null, source: ProxySource = null) => {
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.off("error", onError);
      if (err) reject(err);
      else resolve(source);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        let r: ParseResult;
        try {
          r = parseProxyHeader(buf);
        } catch (err) {
          return done(err as Error);
        }
        if (r.done) {
          const rest = buf.subarray(r.length);
          if (rest.length) socket.unshift(rest);
          return done(null, r.source);
        }
      }
    };
    const onEnd = () => done(new ProxyHeaderError("connection closed before the PROXY header was complete"));
    const onError = (err: Error) => done(err);
    const timer = setTimeout(() => done(new ProxyHeaderError(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs);
    socket.on("readable", onReadable);
    socket.on("end", onEnd);
    socket.on("close", onEnd);
    socket.on("error", onError);
  });
}
