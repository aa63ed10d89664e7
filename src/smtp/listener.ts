// One SMTP listener: smtp-server configured from our settings, with connection limits
// enforced before a session exists (so an over-limit client costs one write and a close).

import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import type { Config, ListenAddress } from "../config/types.ts";
import type { Live } from "../live.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Runtime } from "../runtime.ts";
import { anyContains, clientKey } from "../net/cidr.ts";
import { runStage } from "../checks/types.ts";
import type { CacheState } from "../state/types.ts";
import type { Verdict } from "../verdict.ts";
import { RelayConnection, type ConnectionOwner, type SessionLimits, type StarttlsRefusal } from "./connection-adapter.ts";
import type { Overdue } from "./input-clock.ts";
import { sessionHooks, type ListenerMode, type SessionDeps } from "./session.ts";
import { readProxyHeader } from "./proxy-header.ts";

/** Clients that waited for a delayed greeting are greeted at once for this long (like postscreen's cache). */
const PREGREET_PASS_TTL_MS = 24 * 3_600_000;

/** The pregreet pass cache lives in the policy state (shared by a cluster's nodes). */
export type PregreetState = Pick<CacheState, "pregreetPassed" | "savePregreetPass" | "forgetPregreetPass">;

class RelaySmtpServer extends SMTPServer implements ConnectionOwner {
  /** Sessions per client key (the address, or an IPv6 client's /64), and each session's key. */
  private readonly perIp = new Map<string, number>();
  private readonly keyOf = new WeakMap<RelayConnection, string>();
  /** Connect-stage verdicts, started when the client connects and awaited when its greeting is due. */
  private readonly connectVerdicts = new Map<string, Promise<Verdict>>();
  /**
   * False on a submission port while its certificate (ACME's) has not arrived: connections are
   * refused rather than offered TLS with smtp-server's built-in certificate, whose key is public.
   */
  certificateReady = true;
  /** At least smtp.stress.threshold percent of max_connections open: shorter limits (Postfix's stress mode). */
  private stressed = false;
  limits: SessionLimits;
  /**
   * The reply to STARTTLS while this listener has no certificate of ours (null once it has
   * one): the library would otherwise complete the handshake with its built-in certificate.
   */
  starttlsRefused: StarttlsRefusal | null = null;
  constructor(
    options: SMTPServerOptions,
    private readonly runtime: Live<Runtime>,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly mode: ListenerMode,
    private readonly label: string,
    private readonly pregreet: PregreetState,
  ) {
    super(options);
    this.limits = sessionLimits(runtime.get().config, false);
  }

  /** Implicit TLS (465): a port without its certificate yet closes the connection before the handshake. */
  override _acceptSocket(socket: Socket, handshake: boolean): (() => void) | false {
    if (handshake && !this.certificateReady) {
      this.metrics.connectionsRejected.inc({ reason: "no_certificate" });
      this.log.warn("connection refused", { client_ip: normalizeIp(socket.remoteAddress ?? ""), reason: "no_certificate" });
      socket.on("error", () => {});
      socket.destroy();
      return false;
    }
    // Behind a balancer, a peer gone before it could be told apart (its health check, closed at
    // once: Bun then reports no address) is not read as an untrusted client.
    if (socket.remoteAddress === undefined && this.runtime.get().config.smtp.proxyProtocol.trusted.length) {
      socket.on("error", () => {});
      socket.destroy();
      return false;
    }
    return super._acceptSocket(socket, handshake);
  }

  /** Behind a load balancer (smtp.proxy_protocol.trusted): its header names the client, which then drives everything. */
  override _expectsProxyHeader(socket: Socket): boolean {
    const trusted = this.runtime.get().config.smtp.proxyProtocol.trusted;
    return trusted.length > 0 && anyContains(trusted, normalizeIp(socket.remoteAddress ?? ""));
  }

  override _handleProxy(socket: Socket, callback: Parameters<SMTPServer["_handleProxy"]>[1]): void {
    if (!this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    const peer = normalizeIp(socket.remoteAddress ?? "");
    const peerPort = socket.remotePort ?? 0;
    // The session id, made as the library makes it (which it does only on its own path).
    const id = BigInt(`0x${randomBytes(10).toString("hex")}`).toString(32).padStart(16, "0");
    readProxyHeader(socket, this.runtime.get().config.smtp.commandTimeoutMs).then(
      // LOCAL (the balancer's health check) or UNKNOWN: the balancer itself.
      (source) => callback(null, { id, remoteAddress: source?.address ?? peer, remotePort: source?.port ?? peerPort }),
      (err: Error) => {
        // A trusted balancer that sends no (or a broken) header is misconfigured: never guess the client.
        this.metrics.connectionsRejected.inc({ reason: "proxy_header" });
        this.log.warn("connection refused", { client_ip: peer, reason: "proxy_header", error: err.message });
        socket.on("error", () => {});
        socket.end("421 4.7.0 PROXY protocol header required\r\n");
        setTimeout(() => socket.destroy(), 2000).unref();
        callback(err);
      },
    );
  }

  override connect(socket: Socket, socketOptions?: Parameters<SMTPServer["connect"]>[1]): void {
    // The client: the load balancer's PROXY header's, or the socket's own peer.
    const ip = normalizeIp(socketOptions?.remoteAddress ?? socket.remoteAddress ?? "");
    const { config, pipeline } = this.runtime.get();
    const { smtp } = config;
    if (!this.certificateReady) return this.refuse(socket, ip, "421 4.7.0 TLS not available yet, try again later", "no_certificate");
    // Postfix-style: the refusal is the greeting, then the connection closes.
    if (this.connections.size >= smtp.maxConnections) return this.refuse(socket, ip, "421 4.3.2 Too many connections, try again later", "max_connections");
    const key = clientKey(ip, smtp.ipv6PrefixLength);
    const current = this.perIp.get(key) ?? 0;
    if (current >= smtp.maxConnectionsPerIp) return this.refuse(socket, ip, "421 4.7.0 Too many connections from your IP address, try again later", "max_connections_per_ip");
    this.perIp.set(key, current + 1);

    const conn = new RelayConnection(this, socket, socketOptions);
    this.keyOf.set(conn, key);
    conn.owner = this;
    conn.authRequiresTls = this.mode === "submission";
    const trusted = anyContains(config.relay.relayNetworks, ip) || anyContains(config.defenses.allowlist, ip);
    // The pregreet test is for the MX port: users' mail programs on the submission ports are greeted at once.
    const knownPolite = this.mode !== "mx" || trusted || smtp.greetingDelayMs === 0 || anyContains(smtp.greetingAllowlist, ip) || this.pregreet.pregreetPassed(key);
    // Input sent before the banner is refused from every client (RFC 5321 3.1). Untrusted
    // clients greeted at once still have the banner held for one timer turn, so what they sent
    // with the connection is seen; trusted ones are greeted at once (what they pipeline
    // against RFC 2920 is refused all the same).
    conn.greetingHold = !trusted;
    // DNS lists and the rest run while the client waits for its greeting.
    const checks = this.mode === "mx" ? pipeline.connect : pipeline.connectSubmission;
    if (checks.length && !trusted) {
      const verdict = runStage(checks, { ip, port: socket.remotePort ?? 0, trusted });
      verdict.catch(() => {});
      this.connectVerdicts.set(conn.id, verdict);
    }
    this.connections.add(conn);
    this.checkStress();
    conn.on("error", this.onConnectionError);
    conn.on("connect", this.onConnectionReady);
    if (knownPolite instanceof Promise) return this.initAfter(conn, socket, knownPolite, smtp.greetingDelayMs);
    conn.greetingDelayMs = knownPolite ? 0 : smtp.greetingDelayMs;
    conn.init();
  }

  /** Starts a session once the cluster's pregreet cache has answered (within cluster.timeout); the wait counts towards the delay. */
  private initAfter(conn: RelayConnection, socket: Socket, passed: Promise<boolean>, delayMs: number): void {
    const started = performance.now();
    const ignore = () => {};
    socket.on("error", ignore);
    void passed.then((polite) => {
      socket.off("error", ignore);
      if (socket.destroyed) {
        this.connections.delete(conn);
        return this.connectionEnded(conn);
      }
      conn.greetingDelayMs = polite ? 0 : Math.max(1, delayMs - (performance.now() - started));
      conn.init();
    });
  }

  /** The connect-stage verdict of a session; null when no check ran (trusted clients). */
  connectVerdict(id: string): Promise<Verdict> | null {
    const v = this.connectVerdicts.get(id);
    if (v) this.connectVerdicts.delete(id);
    return v ?? null;
  }

  connectionEnded(conn: RelayConnection): void {
    this.connectVerdicts.delete(conn.id);
    const key = this.keyOf.get(conn) ?? conn.remoteAddress;
    const n = (this.perIp.get(key) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(key);
    else this.perIp.set(key, n);
    this.checkStress();
  }

  commandTimedOut(conn: RelayConnection, kind: Overdue = "command"): void {
    this.metrics.sessionsCut.inc({ reason: kind });
    this.log.info(kind === "command" ? "command timeout" : "data timeout", { cid: conn.id, client_ip: conn.remoteAddress, reason: kind === "rate" ? "content below smtp.min_data_rate" : kind });
  }

  syncViolation(conn: RelayConnection, after: string, input: string): void {
    this.metrics.syncViolations.inc({ after });
    // What the client sent unasked, as Postfix logs it: printable, and short.
    this.log.info("protocol synchronization error", { cid: conn.id, client_ip: conn.remoteAddress, after, input: input.replace(/[^\x20-\x7e]/g, (c) => (c === "\r" ? "\\r" : c === "\n" ? "\\n" : "?")).slice(0, 100), code: 554, status: "5.5.0" });
  }

  tooManyErrors(conn: RelayConnection): void {
    this.metrics.sessionsCut.inc({ reason: "errors" });
    this.log.info("too many errors", { cid: conn.id, client_ip: conn.remoteAddress, limit: this.limits.errorLimit, stress: this.stressed });
  }

  /** Enters or leaves stress mode as the listener fills up or empties. */
  private checkStress(): void {
    const { smtp } = this.runtime.get().config;
    const stressed = smtp.stress.threshold > 0 && this.connections.size * 100 >= smtp.stress.threshold * smtp.maxConnections;
    if (stressed === this.stressed) return;
    this.stressed = stressed;
    this.applyLimits();
    this.metrics.stress.set({ listener: this.label }, stressed ? 1 : 0);
    this.log.warn(stressed ? "stress mode entered" : "stress mode left", { listener: this.label, connections: this.connections.size, max_connections: smtp.maxConnections, idle_timeout_ms: this.options.socketTimeout, error_limit: this.limits.errorLimit });
  }

  /**
   * The limits for the current config and stress state. A shorter idle timeout applies to idle
   * sessions at once (that is how stress frees slots); a longer one from their next command.
   */
  applyLimits(): void {
    const config = this.runtime.get().config;
    this.limits = sessionLimits(config, this.stressed);
    const idle = this.stressed ? Math.min(config.smtp.stress.timeoutMs, config.smtp.idleTimeoutMs) : config.smtp.idleTimeoutMs;
    const shorter = idle < (this.options.socketTimeout ?? Infinity);
    this.options.socketTimeout = idle;
    if (shorter) for (const c of this.connections as Set<RelayConnection>) if (!c._closing && !c._upgrading) c._armTimeout();
  }

  proxyRefused(conn: RelayConnection): void {
    this.metrics.connectionsRejected.inc({ reason: "proxy_untrusted" });
    this.log.warn("connection refused", { cid: conn.id, client_ip: conn.remoteAddress, reason: "proxy_untrusted" });
  }

  earlyTalker(conn: RelayConnection): void {
    this.metrics.earlyTalkers.inc();
    this.pregreet.forgetPregreetPass(this.keyOf.get(conn) ?? conn.remoteAddress);
    this.log.info("early talker refused", { cid: conn.id, client_ip: conn.remoteAddress, code: 554, status: "5.5.1" });
  }

  pregreetPassed(conn: RelayConnection): void {
    this.pregreet.savePregreetPass(this.keyOf.get(conn) ?? conn.remoteAddress, PREGREET_PASS_TTL_MS);
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

function sessionLimits(config: Config, stressed: boolean): SessionLimits {
  const { smtp } = config;
  return {
    commandTimeoutMs: stressed ? Math.min(smtp.stress.timeoutMs, smtp.commandTimeoutMs) : smtp.commandTimeoutMs,
    dataTimeoutMs: smtp.dataTimeoutMs,
    minDataRate: smtp.minDataRate,
    errorLimit: stressed ? Math.min(smtp.stress.errorLimit, smtp.errorLimit) : smtp.errorLimit,
  };
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

/**
 * STARTTLS without a certificate: 454 while ACME's is on its way (RFC 3207 4: TLS not
 * available due to a temporary reason), 502 when none is configured (like Postfix).
 */
function starttlsRefusal(rt: Runtime, tls: object | null): StarttlsRefusal | null {
  if (tls) return null;
  return rt.config.acme ? { code: 454, text: "4.7.0 TLS not available yet, try again later" } : { code: 502, text: "5.5.1 STARTTLS not available: no certificate configured" };
}

/** The TLS options of a listener: the MX certificate, or the submission ones chosen by SNI. */
function tlsOptions(rt: Runtime, mode: ListenerMode) {
  if (mode === "mx") return rt.smtpTls ? { key: rt.smtpTls.key, cert: rt.smtpTls.cert, minVersion: "TLSv1.2" as const } : null;
  const [first] = rt.submissionTls;
  if (!first) return null;
  const sniOptions: Record<string, { key: Buffer; cert: Buffer }> = {};
  for (const c of [...rt.submissionTls].reverse()) for (const name of c.names) sniOptions[name] = { key: c.key, cert: c.cert };
  return { key: first.key, cert: first.cert, minVersion: "TLSv1.2" as const, sniOptions };
}

export async function startSmtpListener(address: ListenAddress, deps: SessionDeps & { readonly pregreet: PregreetState }, mode: ListenerMode = "mx"): Promise<SmtpListener> {
  const { log, runtime } = deps;
  const config = runtime.get().config;
  const tls = tlsOptions(runtime.get(), mode);
  let server: RelaySmtpServer | null = null;
  const hooks = sessionHooks(deps, (id) => server?.connectVerdict(id) ?? null, mode);
  // The MX port takes mail without AUTH; the submission ports take nothing without it, and
  // offer it only over TLS (smtp-server hides AUTH until STARTTLS unless allowInsecureAuth).
  const modeOptions: SMTPServerOptions =
    mode === "mx"
      ? { hideSTARTTLS: !tls, disabledCommands: ["AUTH"], authOptional: true }
      : { secure: mode === "smtps", hideSTARTTLS: mode === "smtps", authMethods: ["PLAIN", "LOGIN"], authOptional: false, allowInsecureAuth: false, authRequiredMessage: "Authentication required", onAuth: hooks.onAuth };
  server = new RelaySmtpServer(
    {
      name: config.hostname,
      banner: "mailraven",
      ...liveOptions(config),
      hideENHANCEDSTATUSCODES: false,
      // We do not enforce TLS on the way out, so we must not offer it (RFC 8689 4.1).
      hideREQUIRETLS: true,
      // DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID are kept with the message and passed on.
      hideDSN: false,
      disableReverseLookup: true,
      logger: false,
      ...modeOptions,
      ...(tls ?? {}),
      onConnect: hooks.onConnect,
      onClose: hooks.onClose,
      onMailFrom: hooks.onMailFrom,
      onRcptTo: hooks.onRcptTo,
      onData: hooks.onData,
    },
    runtime,
    log,
    deps.metrics,
    mode,
    `${address.host}:${address.port}`,
    deps.pregreet,
  );
  server.certificateReady = mode === "mx" || !!tls;
  server.starttlsRefused = starttlsRefusal(runtime.get(), tls);
  server.on("error", (err: Error) => log.error("smtp server error", { error: err }));
  // New limits and certificates apply to the next session; sessions in progress keep theirs.
  runtime.onChange((next) => {
    const nextTls = tlsOptions(next, mode);
    Object.assign(server.options, liveOptions(next.config), { name: next.config.hostname });
    server.applyLimits();
    if (mode === "mx") server.options.hideSTARTTLS = !nextTls;
    if (nextTls) server.updateSecureContext(nextTls);
    server.certificateReady = mode === "mx" || !!nextTls;
    server.starttlsRefused = starttlsRefusal(next, nextTls);
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
  const tlsMode = mode === "smtps" ? "implicit" : tls || mode === "submission" ? "starttls" : "none";
  log.info("smtp listening", { address: address.host, port, mode, tls: tlsMode, ...(tls || !config.acme ? {} : { certificate: "waiting for acme" }) });
  return {
    address,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
