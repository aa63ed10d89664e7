// TLS policies towards a next hop (src/deliver/tls-policy.ts) and what nodemailer's
// SMTPConnection does with them under Bun, over real sockets: smtp-server sinks with and
// without STARTTLS, a self-signed certificate, and a server whose TLS we cannot speak.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { SMTPServer } from "smtp-server";
import { openRoute } from "../../src/deliver/connect.ts";
import { HopConnection, HopOpenError, type HopTarget } from "../../src/deliver/smtp-client.ts";
import { startTlsOptions, tlsPolicyFor, type TlsPolicy } from "../../src/deliver/tls-policy.ts";
import { createLogger } from "../../src/log.ts";
import { selfSigned, type KeyPair } from "../helpers/certs.ts";
import { tempDir } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";

const CLIENT = { heloName: "relay.test", connectTimeoutMs: 3000, timeoutMs: 5000 };
const quiet = createLogger("error", () => {});
let dir: string;
let cert: KeyPair;
let plain: Sink;
let starttls: Sink;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  dir = tempDir("mailraven-tls-");
  cert = selfSigned(dir, "mx.tls.test");
  plain = await Sink.start();
  starttls = await Sink.start({ tls: cert });
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await plain.close();
  await starttls.close();
  rmSync(dir, { recursive: true, force: true });
});

const target = (sink: Sink, tls: TlsPolicy): HopTarget => ({ host: "127.0.0.1", port: sink.port, lmtp: false, tls, servername: "mx.tls.test", label: `mx.tls.test[127.0.0.1]` });

async function deliverOver(sink: Sink, tls: TlsPolicy): Promise<{ conn: string | null; sink: string | null }> {
  const before = sink.messages.length;
  const hop = await HopConnection.open(target(sink, tls), CLIENT, true);
  const [r] = await hop.send({ from: "a@origin.test", to: ["b@dest.test"], size: 20 }, new TextEncoder().encode("Subject: t\r\n\r\nx\r\n"));
  hop.close();
  expect(r?.kind).toBe("ok");
  return { conn: hop.peer.tls, sink: sink.messages[before]!.tls };
}

async function openError(sink: Sink, tls: TlsPolicy): Promise<HopOpenError> {
  try {
    (await HopConnection.open(target(sink, tls), CLIENT, true)).close();
  } catch (err) {
    if (err instanceof HopOpenError) return err;
    throw err;
  }
  throw new Error(`expected ${tls} to fail`);
}

describe("configuration", () => {
  test("per-domain policy, else the default", () => {
    const tls = { default: "opportunistic" as const, byDomain: new Map<string, TlsPolicy>([["bank.test", "verify"]]) };
    expect(tlsPolicyFor(tls, "bank.test")).toBe("verify");
    expect(tlsPolicyFor(tls, "BANK.test")).toBe("verify");
    expect(tlsPolicyFor(tls, "sub.bank.test")).toBe("opportunistic");
  });

  test("SMTPConnection options: requireTLS never (it sends STARTTLS unannounced), verification only under verify, TLS 1.2+", () => {
    expect(startTlsOptions("none", "mx.test")).toMatchObject({ ignoreTLS: true, opportunisticTLS: false, requireTLS: false });
    expect(startTlsOptions("opportunistic", "mx.test")).toMatchObject({ ignoreTLS: false, opportunisticTLS: true, requireTLS: false, tls: { rejectUnauthorized: false, minVersion: "TLSv1.2" } });
    expect(startTlsOptions("required", "mx.test")).toMatchObject({ ignoreTLS: false, opportunisticTLS: false, requireTLS: false, tls: { rejectUnauthorized: false } });
    expect(startTlsOptions("verify", "mx.test")).toMatchObject({ ignoreTLS: false, opportunisticTLS: false, servername: "mx.test", tls: { rejectUnauthorized: true, servername: "mx.test", minVersion: "TLSv1.2" } });
  });
});

describe("under Bun, over real sockets", () => {
  test("none: plain text even when STARTTLS is offered", async () => {
    expect(await deliverOver(starttls, "none")).toEqual({ conn: null, sink: null });
  });

  test("opportunistic: TLS when offered (self-signed is fine), plain text when not", async () => {
    const tls = await deliverOver(starttls, "opportunistic");
    expect(tls.conn).toMatch(/^TLSv1\.[23]$/);
    expect(tls.sink).toBe(tls.conn);
    expect(await deliverOver(plain, "opportunistic")).toEqual({ conn: null, sink: null });
  });

  test("required: TLS with any certificate; no STARTTLS offered is 4.7.5, and nothing was sent", async () => {
    expect((await deliverOver(starttls, "required")).sink).toMatch(/^TLSv1\.[23]$/);
    const before = plain.messages.length;
    const err = await openError(plain, "required");
    expect(err.stage).toBe("tls-missing");
    expect(err.message).toBe("4.7.5 TLS required but not available: mx.tls.test[127.0.0.1] does not offer STARTTLS");
    expect(plain.messages.length).toBe(before);
  });

  test("verify: a self-signed certificate fails the handshake with 4.7.5", async () => {
    const err = await openError(starttls, "verify");
    expect(err.stage).toBe("tls-handshake");
    expect(err.message).toStartWith("4.7.5 TLS required but not available: mx.tls.test[127.0.0.1]: TLS handshake failed: ");
    expect(err.message).toMatch(/self[- ]signed/i);
  });

  test("a greeting refused with 421 is a reply error with its code", async () => {
    const busy = await Sink.start({ greeting: () => ({ code: 421, message: "4.3.2 Busy, try later" }) });
    cleanups.push(() => busy.close());
    const err = await openError(busy, "opportunistic");
    expect(err.stage).toBe("reply");
    expect(err.responseCode).toBe(421);
    expect(err.response).toContain("4.3.2 Busy, try later");
  });

  test("opportunistic: a handshake that fails (a TLS 1.1 server) is retried once in plain text", async () => {
    const received: boolean[] = [];
    const old = new SMTPServer({
      authOptional: true,
      disabledCommands: ["AUTH"],
      key: cert.key,
      cert: cert.cert,
      minVersion: "TLSv1",
      maxVersion: "TLSv1.1",
      logger: false,
      onData: (stream, session, cb) => {
        stream.resume();
        stream.on("end", () => (received.push(session.secure), cb()));
      },
    } as ConstructorParameters<typeof SMTPServer>[0]);
    old.on("error", () => {});
    await new Promise<void>((resolve) => old.listen(0, "127.0.0.1", () => resolve()));
    cleanups.push(() => new Promise<void>((resolve) => old.close(() => resolve())));
    const port = (old.server.address() as { port: number }).port;

    const strict = await openError({ port } as Sink, "required");
    expect(strict.stage).toBe("tls-handshake");

    const hop = await openRoute({ protocol: "smtp", host: "127.0.0.1", port, uri: `smtp://127.0.0.1:${port}` }, CLIENT, quiet);
    expect(hop.peer).toEqual({ mx: null, tls: null });
    const [r] = await hop.send({ from: "a@origin.test", to: ["b@dest.test"], size: 20 }, new TextEncoder().encode("Subject: t\r\n\r\nx\r\n"));
    hop.close();
    expect(r?.kind).toBe("ok");
    expect(received).toEqual([false]);
  });
});
