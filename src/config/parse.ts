// Turns the parsed YAML document into a Config, naming every bad key with what was expected.

import { hostname as osHostname } from "node:os";
import { resolve } from "node:path";
import { domainToASCII } from "node:url";
import { parseCidr, type Cidr } from "../net/cidr.ts";
import type { LogLevel } from "../log.ts";
import { parseDuration } from "../units.ts";
import { readFileSync } from "node:fs";
import { ConfigErrors, join, Reader, type Obj, type SecretSources } from "./reader.ts";
import type { AdminConfig, AuthPolicy, Config, ListenAddress, Route, TlsFiles, TlsPolicy } from "./types.ts";
import { authPolicy, DEFAULT_AUTH_POLICY, parseDefenses, parseDns, parsePipeline } from "./defenses.ts";
import { systemServers } from "../dns/resolver.ts";
import { parseOutbound, TLS_POLICIES } from "./outbound.ts";
import { parseSubmission } from "./submission.ts";
import { checkAcmePrecedence, parseAcme } from "./acme.ts";
import { parseCluster, parseProxyProtocol } from "./cluster.ts";
import { domainRecipients, parseRecipientVerification, RECIPIENT_KEYS } from "./recipients.ts";
import type { DomainRecipients } from "./types.ts";
import { minFreeSpace, SMTP_HARDENING_KEYS, smtpHardening } from "./smtp-hardening.ts";

// Gives up after about 5 days (5d 8h), as RFC 5321 4.5.4.1 asks ("at least 4-5 days").
const DEFAULT_RETRY_SCHEDULE = ["5m", "15m", "30m", "1h", "2h", "4h", "8h", "16h", "24h", "24h", "24h", "24h"];
const DEFAULT_PORTS = { smtp: 25, lmtp: 24 } as const;

function readResolvConf(): string {
  try {
    return readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    return "";
  }
}

export interface ParseEnv {
  /** Relative paths in the document are resolved against this directory. */
  readonly cwd: string;
  readonly vars?: Readonly<Record<string, string | undefined>>;
  readonly readFile?: (path: string) => string;
  /** Contents of /etc/resolv.conf, for the default DNS servers. */
  readonly resolvConf?: string;
}

export function parseConfig(doc: unknown, env: ParseEnv = { cwd: process.cwd() }): Config {
  const r = new Reader();
  const secrets: SecretSources = {
    vars: env.vars ?? process.env,
    readFile: env.readFile ?? ((p) => readFileSync(resolve(env.cwd, p), "utf8")),
  };
  const top = r.section(doc, "", ["hostname", "state_dir", "log_level", "smtp", "relay", "queue", "delivery", "admin", "backup", "dns", "defenses", "pipeline", "outbound", "submission", "api", "acme", "cluster"]);

  const hostname = r.string(top, "hostname", "", osHostname());
  if (!isHostname(hostname)) r.fail("hostname", "a fully qualified host name such as mx.example.org", hostname);

  const smtpObj = r.section(top.smtp, "smtp", [
    "listen", "max_connections", "max_connections_per_ip", "idle_timeout", "command_timeout", "max_message_size",
    "max_recipients", "max_line_length", "max_hops", "greeting_delay", "greeting_allowlist", "shutdown_timeout", "tls", "ipv6_prefix_length",
    "proxy_protocol",
    ...SMTP_HARDENING_KEYS,
  ]);
  const relayObj = r.section(top.relay, "relay", ["domains", "relay_networks", "smarthost", "recipient_verification"]);
  const queueObj = r.section(top.queue, "queue", ["retry_schedule", "inline_max_size", "delay_warning", "min_free_space"]);
  const deliveryObj = r.section(top.delivery, "delivery", ["concurrency_per_route", "connect_timeout", "timeout", "idle_connection_ttl"]);
  const adminObj = r.section(top.admin, "admin", ["enabled", "listen", "token", "token_file", "token_env", "tls"]);
  const backupObj = r.section(top.backup, "backup", ["dir", "keep", "include_secrets"]);
  const stateDir = resolve(env.cwd, r.string(top, "state_dir", "", "/var/lib/mailraven"));
  const smtpTls = tlsFiles(r, smtpObj.tls, "smtp.tls", env.cwd);
  const defenses = parseDefenses(r, top.defenses, hostname.toLowerCase());
  const domainPolicy = new Map<string, Partial<AuthPolicy>>();
  const recipients = new Map<string, DomainRecipients>();
  const acme = parseAcme(r, top.acme, stateDir, env.cwd, isHostname, (text, path) => {
    const hp = parseHostPort(text);
    return hp?.port === undefined ? r.fail(path, 'an address such as "0.0.0.0:80" or "[::]:80"', text) : { host: hp.host, port: hp.port };
  });
  checkAcmePrecedence(r, acme, smtpObj.tls);
  const maxMessageSize = r.size(smtpObj, "max_message_size", "smtp", 25 * 1024 * 1024, 1024);

  const config: Config = {
    hostname: hostname.toLowerCase(),
    stateDir,
    logLevel: r.oneOf<LogLevel>(top, "log_level", "", ["debug", "info", "warn", "error"], "info"),
    smtp: {
      listen: listenAddresses(r, smtpObj),
      maxConnections: r.int(smtpObj, "max_connections", "smtp", 100, 1, 100_000),
      maxConnectionsPerIp: r.int(smtpObj, "max_connections_per_ip", "smtp", 10, 1, 100_000),
      idleTimeoutMs: r.duration(smtpObj, "idle_timeout", "smtp", 300_000, 1000),
      commandTimeoutMs: r.duration(smtpObj, "command_timeout", "smtp", 30_000, 1000),
      maxMessageSize,
      maxRecipients: r.int(smtpObj, "max_recipients", "smtp", 100, 1, 100_000),
      // RFC 5321 4.5.3.1.4 allows 512 octets per command; extensions (SIZE, SMTPUTF8, DSN) need more room.
      maxLineLength: r.int(smtpObj, "max_line_length", "smtp", 2048, 512, 1_048_576),
      // Postfix's hopcount_limit: more Received: headers than this is a loop.
      maxHops: r.int(smtpObj, "max_hops", "smtp", 50, 1, 1000),
      greetingDelayMs: r.duration(smtpObj, "greeting_delay", "smtp", 1000),
      greetingAllowlist: cidrs(r, smtpObj, "greeting_allowlist", "smtp", []),
      shutdownTimeoutMs: r.duration(smtpObj, "shutdown_timeout", "smtp", 30_000),
      tls: smtpTls,
      // Postfix 3.8's smtpd_client_ipv6_prefix_length: one subscriber's /64 is one client.
      ipv6PrefixLength: r.int(smtpObj, "ipv6_prefix_length", "smtp", 64, 16, 128),
      proxyProtocol: parseProxyProtocol(r, smtpObj.proxy_protocol),
      ...smtpHardening(r, smtpObj),
    },
    relay: {
      domains: domains(r, relayObj, domainPolicy, recipients, secrets.readFile),
      recipients,
      recipientVerification: parseRecipientVerification(r, relayObj.recipient_verification),
      relayNetworks: cidrs(r, relayObj, "relay_networks", "relay", ["127.0.0.0/8", "::1/128"]),
      smarthost: relayObj.smarthost === undefined || relayObj.smarthost === null ? null : route(r, relayObj.smarthost, "relay.smarthost"),
    },
    queue: {
      retryScheduleMs: retrySchedule(r, queueObj),
      inlineMaxSize: r.size(queueObj, "inline_max_size", "queue", 128 * 1024, 0),
      // Postfix's delay_warning_time, on by default here: senders hear of mail stuck for hours.
      delayWarningMs: r.duration(queueObj, "delay_warning", "queue", 4 * 3_600_000),
      minFreeSpace: minFreeSpace(r, queueObj, maxMessageSize),
    },
    delivery: {
      // Postfix's default_destination_concurrency_limit.
      concurrencyPerRoute: r.int(deliveryObj, "concurrency_per_route", "delivery", 20, 1, 1000),
      connectTimeoutMs: r.duration(deliveryObj, "connect_timeout", "delivery", 30_000, 100),
      timeoutMs: r.duration(deliveryObj, "timeout", "delivery", 300_000, 1000),
      idleConnectionTtlMs: r.duration(deliveryObj, "idle_connection_ttl", "delivery", 5_000),
    },
    admin: adminConfig(r, adminObj, secrets, env.cwd),
    backup: {
      dir: resolve(env.cwd, r.string(backupObj, "dir", "backup", resolve(stateDir, "backups"))),
      keep: r.int(backupObj, "keep", "backup", 7, 1, 10_000),
      includeSecrets: backupObj.include_secrets == null || typeof backupObj.include_secrets === "boolean" ? !!backupObj.include_secrets : (r.fail("backup.include_secrets", "true or false", backupObj.include_secrets) ?? false),
    },
    dns: parseDns(r, top.dns, () => systemServers(env.resolvConf ?? readResolvConf())),
    defenses,
    pipeline: parsePipeline(r, top.pipeline, defenses),
    domainPolicy,
    outbound: parseOutbound(r, top.outbound, stateDir, env.cwd),
    api: apiConfig(r, top.api, env.cwd),
    submission: parseSubmission(r, top.submission, env.cwd, smtpTls, (list, path) => addressList(r, list, path), !!acme),
    acme,
    cluster: parseCluster(r, top.cluster, secrets, env.cwd),
  };
  if (r.problems.length) throw new ConfigErrors(r.problems);
  return deepFreeze(config);
}

function listenAddresses(r: Reader, smtp: Obj): ListenAddress[] {
  const list = r.list(smtp, "listen", "smtp") ?? ["0.0.0.0:25"];
  if (list.length === 0) r.fail("smtp.listen", "at least one address such as \"0.0.0.0:25\"", list);
  return addressList(r, list, "smtp.listen");
}

function addressList(r: Reader, list: unknown[], path: string): ListenAddress[] {
  return list.flatMap((item, i) => {
    const parsed = typeof item === "string" ? parseHostPort(item) : undefined;
    if (!parsed || parsed.port === undefined) return r.fail(join(path, i), 'an address such as "0.0.0.0:25" or "[::]:25"', item) ?? [];
    return [{ host: parsed.host, port: parsed.port }];
  });
}

function adminConfig(r: Reader, admin: Obj, secrets: SecretSources, cwd: string): AdminConfig {
  const enabled = admin.enabled === undefined || admin.enabled === null ? true : admin.enabled;
  if (typeof enabled !== "boolean") r.fail("admin.enabled", "true or false", enabled);
  const text = r.string(admin, "listen", "admin", "127.0.0.1:8025");
  const listen = parseHostPort(text);
  if (!listen || listen.port === undefined) r.fail("admin.listen", 'an address such as "127.0.0.1:8025"', text);
  const tls = tlsFiles(r, admin.tls, "admin.tls", cwd);
  // A bearer token crossing a network in clear text is as good as published.
  if (enabled && listen && !isLoopback(listen.host) && !tls) {
    r.problems.push(`admin.listen: ${text} is not a loopback address; the admin API then requires admin.tls (cert_file and key_file), or listen on 127.0.0.1`);
  }
  return {
    listen: enabled && listen?.port !== undefined ? { host: listen.host, port: listen.port } : null,
    token: r.secret(admin, "token", "admin", secrets, 32) ?? null,
    tls,
  };
}

function apiConfig(r: Reader, value: unknown, cwd: string): Config["api"] {
  if (value === undefined || value === false) return null;
  const o = r.section(value ?? {}, "api", ["listen", "tls"]);
  const text = r.string(o, "listen", "api", "127.0.0.1:8026");
  const listen = parseHostPort(text);
  const tls = tlsFiles(r, o.tls, "api.tls", cwd);
  if (!listen || listen.port === undefined) return r.fail("api.listen", 'an address such as "127.0.0.1:8026"', text) ?? null;
  // API keys in clear text across a network are as good as published.
  if (!isLoopback(listen.host) && !tls) r.problems.push(`api.listen: ${text} is not a loopback address; the send API then requires api.tls (cert_file and key_file), or listen on 127.0.0.1`);
  return { listen: { host: listen.host, port: listen.port }, tls };
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function tlsFiles(r: Reader, value: unknown, path: string, cwd: string): TlsFiles | null {
  if (value === undefined || value === null) return null;
  const obj = r.section(value, path, ["cert_file", "key_file"]);
  const certFile = r.string(obj, "cert_file", path, "");
  const keyFile = r.string(obj, "key_file", path, "");
  if (!certFile) r.fail(join(path, "cert_file"), "the path of a PEM certificate chain", obj.cert_file);
  if (!keyFile) r.fail(join(path, "key_file"), "the path of a PEM private key", obj.key_file);
  return { certFile: resolve(cwd, certFile), keyFile: resolve(cwd, keyFile) };
}

function domains(r: Reader, relay: Obj, policies: Map<string, Partial<AuthPolicy>>, recipients: Map<string, DomainRecipients>, readFile: (path: string) => string): Map<string, Route> {
  const out = new Map<string, Route>();
  const value = relay.domains;
  if (value === undefined || value === null) return out;
  if (typeof value !== "object" || Array.isArray(value)) {
    r.fail("relay.domains", 'a mapping of domain to route, e.g. "example.org: smtp://10.0.0.5:25"', value);
    return out;
  }
  for (const [name, target] of Object.entries(value)) {
    const path = join("relay.domains", name);
    const ascii = domainToASCII(name.toLowerCase().replace(/\.$/, ""));
    if (!ascii || !isHostname(ascii)) {
      r.problems.push(`${path}: "${name}" is not a valid domain name`);
      continue;
    }
    // Either a route, or a mapping with the route and this domain's authentication policy.
    if (target && typeof target === "object" && !Array.isArray(target)) {
      const o = r.section(target, path, ["route", "spf_fail", "dmarc_reject", "temp_error", ...RECIPIENT_KEYS]);
      const rt = route(r, o.route, join(path, "route"));
      if (rt) out.set(ascii, rt);
      const policy = authPolicy(r, o, path, DEFAULT_AUTH_POLICY);
      const given: Partial<AuthPolicy> = {};
      if (o.spf_fail !== undefined) Object.assign(given, { spfFail: policy.spfFail });
      if (o.dmarc_reject !== undefined) Object.assign(given, { dmarcReject: policy.dmarcReject });
      if (o.temp_error !== undefined) Object.assign(given, { tempError: policy.tempError });
      policies.set(ascii, given);
      const known = domainRecipients(r, o, path, readFile);
      if (known) recipients.set(ascii, known);
      continue;
    }
    const rt = route(r, target, path);
    if (rt) out.set(ascii, rt);
  }
  return out;
}

function route(r: Reader, value: unknown, path: string): Route | null {
  const m = typeof value === "string" ? /^(smtp|lmtp):\/\/([^/?]+?)\/?(?:\?(.*))?$/i.exec(value.trim()) : null;
  const protocol = m?.[1]!.toLowerCase() as "smtp" | "lmtp" | undefined;
  const hp = m ? parseHostPort(m[2]!) : undefined;
  if (!protocol || !hp || hp.port === 0) return r.fail(path, 'a route such as "smtp://10.0.0.5:25" or "lmtp://[2001:db8::5]:24"', value) ?? null;
  // ?tls=: STARTTLS towards this next hop, as outbound.tls_policy says it for MX hosts.
  const query = new URLSearchParams(m![3] ?? "");
  const unknown = [...query.keys()].find((k) => k !== "tls");
  if (unknown !== undefined) return r.fail(path, `a route whose only option is ?tls=${TLS_POLICIES.join("|")} (found "${unknown}")`, value) ?? null;
  const tls = query.get("tls") ?? undefined;
  if (tls !== undefined && !(TLS_POLICIES as readonly string[]).includes(tls)) return r.fail(path, `?tls= one of ${TLS_POLICIES.join(", ")}`, value) ?? null;
  return { protocol, host: hp.host, port: hp.port ?? DEFAULT_PORTS[protocol], uri: `${protocol}://${m![2]}${tls ? `?tls=${tls}` : ""}`, ...(tls ? { tls: tls as TlsPolicy } : {}) };
}

function cidrs(r: Reader, obj: Obj, key: string, path: string, fallback: string[]): Cidr[] {
  const list = r.list(obj, key, path) ?? fallback;
  return list.flatMap((item, i) => {
    const c = typeof item === "string" ? parseCidr(item.trim()) : undefined;
    return c ? [c] : (r.fail(join(join(path, key), i), 'an IPv4 or IPv6 network such as "192.0.2.0/24" or "2001:db8::/32"', item) ?? []);
  });
}

function retrySchedule(r: Reader, queue: Obj): number[] {
  const list = r.list(queue, "retry_schedule", "queue") ?? DEFAULT_RETRY_SCHEDULE;
  if (list.length === 0) r.fail("queue.retry_schedule", "at least one delay", list);
  return list.map((item, i) => {
    const ms = typeof item === "string" || typeof item === "number" ? parseDuration(item) : undefined;
    return ms !== undefined && ms >= 1000 ? ms : (r.fail(join("queue.retry_schedule", i), 'a delay of at least "1s" such as "5m"', item) ?? 0);
  });
}

function parseHostPort(text: string): { host: string; port: number | undefined } | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::(\d{1,5}))?$/i.exec(text.trim());
  if (!m) return undefined;
  const port = m[3] === undefined ? undefined : Number(m[3]);
  // Port 0 (any free port) is allowed for listeners, which tests use; routes need a real one.
  if (port !== undefined && port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

export function isHostname(name: string): boolean {
  return name.length <= 253 && /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(name);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    // Object.freeze does not reach a Map's entries; take away its mutators as well.
    if (value instanceof Map) {
      for (const name of ["set", "delete", "clear"]) {
        Object.defineProperty(value, name, { value: () => { throw new TypeError("the configuration is read-only"); } });
      }
    }
    Object.freeze(value);
    for (const v of value instanceof Map ? value.values() : Object.values(value)) deepFreeze(v);
  }
  return value;
}
