// One SMTP listener: smtp-server configured from our settings, with connection limits
// enforced before a session exists (so an over-limit client costs one write and a close).

import type { Socket } from "node:net";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import type { Config, ListenAddress } from "../config/types.ts";
import type { Live } from "../live.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Runtime } from "../runtime.ts";
import { anyContains } from "../net/cidr.ts";
import { LRUCache } from "lru-cache";
import { runStage } from "../checks/types.ts";
import { ACCEPT, type Verdict } from "../verdict.ts";
import { RelayConnection, type ConnectionOwner } from "./connection-adapter.ts";
import { sessionHooks, type SessionDeps } from "./session.ts";

/** Clients that waited for a delayed greeting are greeted at once for this long (like postscreen's cache). */
const PREGREET_PASS_TTL_MS = 24 * 3_600_000;

class RelaySmtpServer extends SMTPServer implements ConnectionOwner {
  private readonly perIp = new Map<string, number>();
  /** Connect-stage verdicts, started when the client connects and awaited when its greeting is due. */
  private readonly connectVerdicts = new Map<string, Promise<Verdict>>();
  private readonly pregreetPassedIps = new LRUCache<string, true>({ max: 100_000, ttl: PREGREET_PASS_TTL_MS });

  constructor(options: SMTPServerOptions, private readonly runtime: Live<Runtime>, private readonly log: Logger, private readonly metrics: Metrics) {
    super(options);
  }

  override connect(socket: Socket, socketOptions?: Parameters<SMTPServer["connect"]>[1]): void {
    const ip = normalizeIp(socket.remoteAddress ?? "");
    const { config, pipeline } = this.runtime.get();
    const { smtp } = config;
    // Postfix-style: the refusal is the greeting, then the connection closes.
    if (this.connections.size >= smtp.maxConnections) return this.refuse(socket, ip, "421 4.3.2 Too many connections, try again later", "max_connections");
    const current = this.perIp.get(ip) ?? 0;
    if (current >= smtp.maxConnectionsPerIp) return this.refuse(socket, ip, "421 4.7.0 Too many connections from your IP address, try again later", "max_connections_per_ip");
    this.perIp.set(ip, current + 1);

    const conn = new RelayConnection(this, socket, socketOptions);
    conn.owner = this;
    conn.commandTimeoutMs = smtp.commandTimeoutMs;
    const trusted = anyContains(config.relay.relayNetworks, ip) || anyContains(config.defenses.allowlist, ip);
    const knownPolite = trusted || anyContains(smtp.greetingAllowlist, ip) || this.pregreetPassedIps.has(ip);
    conn.greetingDelayMs = knownPolite ? 0 : smtp.greetingDelayMs;
    // DNS lists and the rest run while the client waits for its greeting.
    if (pipeline.connect.length && !trusted) {
      const verdict = runStage(pipeline.connect, { ip, port: socket.remotePort ?? 0, trusted });
      verdict.catch(() => {});
      this.connectVerdicts.set(conn.id, verdict);
    }
    this.connections.add(conn);
    conn.on("error", this.onConnectionError);
    conn.on("connect", this.onConnectionReady);
    conn.init();
  }

  /** The connect-stage verdict of a session (accept when none ran). */
  connectVerdict(id: string): Promise<Verdict> {
    const v = this.connectVerdicts.get(id);
    this.connectVerdicts.delete(id);
    return v ?? Promise.resolve(ACCEPT);
  }

  connectionEnded(conn: RelayConnection): void {
    this.connectVerdicts.delete(conn.id);
    const ip = conn.remoteAddress;
    const n = (this.perIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(ip);
    else this.perIp.set(ip, n);
  }

  commandTimedOut(conn: RelayConnection): void {
    this.log.info("command timeout", { cid: conn.id, client_ip: conn.remoteAddress });
  }

  earlyTalker(conn: RelayConnection): void {
    this.metrics.earlyTalkers.inc();
    this.pregreetPassedIps.delete(conn.remoteAddress);
    this.log.info("early talker refused", { cid: conn.id, client_ip: conn.remoteAddress, code: 554, status: "5.5.1" });
  }

  pregreetPassed(conn: RelayConnection): void {
    this.pregreetPassedIps.set(conn.remoteAddress, true);
  }

  // Shared listeners (`this` is the connection), so an idle connection carries no closures.
  private readonly onConnectionError = (err: Error) => this.log.warn("connection error", { error: err });
  private readonly onConnectionReady = (data: unknown) => this.emit("connect", data);

  private refuse(socket: Socket, ip: string, reply: string, reason: string): void {
    this.metrics.connectionsRejected.inc({ reason });
    this.log.warn("connection refused", { client_ip: ip, reason });
    socket.on("error", () => {});
    socket.end(`${reply}\r\n`);
    setTimeout(() => socket.destroy(), 2000).unref();
  }
}

/** smtp-server reports IPv4 clients of a dual-stack socket as ::ffff:a.b.c.d; we use a.b.c.d. */
function normalizeIp(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

export interface SmtpListener {
  readonly address: ListenAddress;
  readonly port: number;
  close(): Promise<void>;
}

/** smtp-server reads these options at use, so a reload can change them in place. */
function liveOptions(config: Config) {
  return {
    size: config.smtp.maxMessageSize,
    maxRecipients: config.smtp.maxRecipients,
    maxCommandLength: config.smtp.maxLineLength,
    socketTimeout: config.smtp.idleTimeoutMs,
    closeTimeout: config.smtp.shutdownTimeoutMs,
  };
}

export async function startSmtpListener(address: ListenAddress, deps: SessionDeps): Promise<SmtpListener> {
  const { log, runtime } = deps;
  const { config, smtpTls } = runtime.get();
  let server: RelaySmtpServer | null = null;
  const hooks = sessionHooks(deps, (id) => server?.connectVerdict(id) ?? Promise.resolve(ACCEPT));
  server = new RelaySmtpServer(
    {
      name: config.hostname,
      banner: "mailraven",
      ...liveOptions(config),
      hideENHANCEDSTATUSCODES: false,
      hideSTARTTLS: !smtpTls,
      disabledCommands: ["AUTH"],
      authOptional: true,
      disableReverseLookup: true,
      logger: false,
      ...(smtpTls ? { key: smtpTls.key, cert: smtpTls.cert, minVersion: "TLSv1.2" as const } : {}),
      onConnect: hooks.onConnect,
      onClose: hooks.onClose,
      onMailFrom: hooks.onMailFrom,
      onRcptTo: hooks.onRcptTo,
      onData: hooks.onData,
    },
    runtime,
    log,
    deps.metrics,
  );
  server.on("error", (err: Error) => log.error("smtp server error", { error: err }));
  // New limits and certificates apply to the next session; sessions in progress keep theirs.
  runtime.onChange((next) => {
    Object.assign(server.options, liveOptions(next.config), { name: next.config.hostname, hideSTARTTLS: !next.smtpTls });
    if (next.smtpTls) server.updateSecureContext({ key: next.smtpTls.key, cert: next.smtpTls.cert, minVersion: "TLSv1.2" });
  });
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on ${address.host}:${address.port} (smtp.listen): ${err.code === "EADDRINUSE" ? "address already in use" : err.code === "EACCES" ? "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)" : err.message}`)),
    );
    server.listen(address.port, address.host, () => {
      server.server.removeAllListeners("error");
      resolve();
    });
  });
  const port = (server.server.address() as { port: number }).port;
  log.info("smtp listening", { address: address.host, port, starttls: !!smtpTls });
  return {
    address,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
