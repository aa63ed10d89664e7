// The effective configuration as an admin would write it, for `mailraven check-config`.
// Defaults are filled in and units shown; secrets (none in this section yet) are redacted here.

import { formatDuration } from "../units.ts";
import type { Config } from "./types.ts";

const size = (n: number) => (n % 1048576 === 0 ? `${n / 1048576}MiB` : n % 1024 === 0 ? `${n / 1024}KiB` : `${n}`);
const hostPort = (h: string, p: number) => (h.includes(":") ? `[${h}]:${p}` : `${h}:${p}`);

export function effectiveConfig(c: Config): Record<string, unknown> {
  return {
    hostname: c.hostname,
    state_dir: c.stateDir,
    log_level: c.logLevel,
    smtp: {
      listen: c.smtp.listen.map((l) => hostPort(l.host, l.port)),
      max_connections: c.smtp.maxConnections,
      max_connections_per_ip: c.smtp.maxConnectionsPerIp,
      idle_timeout: formatDuration(c.smtp.idleTimeoutMs),
      command_timeout: formatDuration(c.smtp.commandTimeoutMs),
      max_message_size: size(c.smtp.maxMessageSize),
      max_recipients: c.smtp.maxRecipients,
      max_line_length: c.smtp.maxLineLength,
      max_hops: c.smtp.maxHops,
      greeting_delay: formatDuration(c.smtp.greetingDelayMs),
      greeting_allowlist: c.smtp.greetingAllowlist.map((x) => x.text),
      shutdown_timeout: formatDuration(c.smtp.shutdownTimeoutMs),
      tls: c.smtp.tls ? { cert_file: c.smtp.tls.certFile, key_file: c.smtp.tls.keyFile } : null,
      ipv6_prefix_length: c.smtp.ipv6PrefixLength,
      proxy_protocol: { trusted: c.smtp.proxyProtocol.trusted.map((x) => x.text) },
      data_timeout: formatDuration(c.smtp.dataTimeoutMs),
      min_data_rate: c.smtp.minDataRate,
      nul_bytes: c.smtp.nulBytes,
      max_header_size: size(c.smtp.maxHeaderSize),
      max_header_section: size(c.smtp.maxHeaderSection),
      error_limit: c.smtp.errorLimit,
      stress: { threshold: c.smtp.stress.threshold, timeout: formatDuration(c.smtp.stress.timeoutMs), error_limit: c.smtp.stress.errorLimit },
    },
    relay: {
      domains: Object.fromEntries([...c.relay.domains].map(([d, r]) => [d, c.domainPolicy.has(d) ? { route: r.uri, ...policyView(c.domainPolicy.get(d)!), ...recipientsView(c.relay.recipients.get(d)) } : r.uri])),
      relay_networks: c.relay.relayNetworks.map((x) => x.text),
      smarthost: c.relay.smarthost?.uri ?? null,
      recipient_verification: verificationView(c.relay.recipientVerification),
    },
    queue: {
      retry_schedule: c.queue.retryScheduleMs.map(formatDuration),
      inline_max_size: size(c.queue.inlineMaxSize),
      delay_warning: formatDuration(c.queue.delayWarningMs),
      min_free_space: size(c.queue.minFreeSpace),
    },
    delivery: {
      concurrency_per_route: c.delivery.concurrencyPerRoute,
      connect_timeout: formatDuration(c.delivery.connectTimeoutMs),
      timeout: formatDuration(c.delivery.timeoutMs),
      idle_connection_ttl: formatDuration(c.delivery.idleConnectionTtlMs),
    },
    admin: {
      enabled: c.admin.listen !== null,
      listen: c.admin.listen ? hostPort(c.admin.listen.host, c.admin.listen.port) : null,
      // Never the value: only where it comes from.
      token: c.admin.token ? `(redacted, from ${c.admin.token.source})` : null,
      tls: c.admin.tls ? { cert_file: c.admin.tls.certFile, key_file: c.admin.tls.keyFile } : null,
    },
    backup: { dir: c.backup.dir, keep: c.backup.keep, include_secrets: c.backup.includeSecrets },
    dns: {
      servers: c.dns.servers.map((s) => hostPort(s.host, s.port)),
      timeout: formatDuration(c.dns.timeoutMs),
      attempts: c.dns.attempts,
    },
    defenses: defensesView(c),
    pipeline: { connect: c.pipeline.connect, mail: c.pipeline.mail, rcpt: c.pipeline.rcpt, content: c.pipeline.content },
    outbound: {
      mx_delivery: c.outbound.mxDelivery,
      tls_policy: { default: c.outbound.tlsPolicy.default, domains: Object.fromEntries(c.outbound.tlsPolicy.byDomain) },
      mta_sts: c.outbound.mtaSts,
      ignore_mx_addresses: c.outbound.ignoreMxAddresses.map((x) => x.text),
      dkim_dir: c.outbound.dkimDir,
      dkim_sign: c.outbound.dkimSign,
    },
    submission: c.submission
      ? {
          starttls: c.submission.starttls.map((l) => hostPort(l.host, l.port)),
          tls: c.submission.implicitTls.map((l) => hostPort(l.host, l.port)),
          certificates: c.submission.certificates.map((t) => ({ cert_file: t.certFile, key_file: t.keyFile })),
          rate_limit: c.submission.rateLimit ? `${c.submission.rateLimit.messages}/${formatDuration(c.submission.rateLimit.windowMs)}` : "off",
          auth_failures: { max: c.submission.authFailures.max, window: formatDuration(c.submission.authFailures.windowMs), block_for: formatDuration(c.submission.authFailures.blockForMs) },
          auth_concurrency: c.submission.authConcurrency,
          auth_rate_limit: c.submission.authRateLimit ? `${c.submission.authRateLimit.messages}/${formatDuration(c.submission.authRateLimit.windowMs)}` : "off",
        }
      : null,
    api: c.api ? { listen: hostPort(c.api.listen.host, c.api.listen.port), tls: c.api.tls ? { cert_file: c.api.tls.certFile, key_file: c.api.tls.keyFile } : null } : null,
    acme: c.acme
      ? {
          enabled: true,
          directory: c.acme.directory,
          email: c.acme.email,
          hostnames: c.acme.hostnames,
          http_listen: hostPort(c.acme.httpListen.host, c.acme.httpListen.port),
          renew_before: formatDuration(c.acme.renewBeforeMs),
          ca_file: c.acme.caFile,
        }
      : { enabled: false },
    cluster: clusterView(c.cluster),
  };
}

function clusterView(k: Config["cluster"]): Record<string, unknown> {
  if (!k) return { enabled: false };
  return {
    enabled: true,
    // Never the password: the URL shows "redacted" in its place, password* where it comes from.
    redis: k.shownUrl,
    password: k.password ? `(redacted, from ${k.password.source})` : null,
    ca_file: k.caFile,
    key_prefix: k.keyPrefix,
    node_name: k.nodeName,
    timeout: formatDuration(k.timeoutMs),
    refresh_interval: formatDuration(k.refreshIntervalMs),
    heartbeat: formatDuration(k.heartbeatMs),
    fallback: { ...k.fallback },
  };
}

function recipientsView(k: Config["relay"]["recipients"] extends ReadonlyMap<string, infer V> ? V | undefined : never): Record<string, unknown> {
  if (!k) return {};
  return { ...(k.inline ? { recipients: k.inline } : {}), ...(k.file ? { recipients_file: k.file } : {}), verify_recipients: k.verify };
}

function verificationView(v: Config["relay"]["recipientVerification"]): Record<string, unknown> {
  return {
    positive_ttl: formatDuration(v.positiveTtlMs),
    negative_ttl: formatDuration(v.negativeTtlMs),
    positive_refresh: formatDuration(v.positiveRefreshMs),
    negative_refresh: formatDuration(v.negativeRefreshMs),
    wait: formatDuration(v.waitMs),
    timeout: formatDuration(v.timeoutMs),
    unreachable: v.unreachable,
    concurrency_per_hop: v.concurrencyPerHop,
    probes_per_hop: `${v.probesPerHop.messages}/${formatDuration(v.probesPerHop.windowMs)}`,
  };
}

function policyView(p: Partial<{ spfFail: string; dmarcReject: boolean; tempError: string }>): Record<string, unknown> {
  return {
    ...(p.spfFail !== undefined ? { spf_fail: p.spfFail } : {}),
    ...(p.dmarcReject !== undefined ? { dmarc_reject: p.dmarcReject } : {}),
    ...(p.tempError !== undefined ? { temp_error: p.tempError } : {}),
  };
}

function defensesView(c: Config): Record<string, unknown> {
  const d = c.defenses;
  const limit = (l: { messages: number; windowMs: number } | null) => (l ? `${l.messages}/${formatDuration(l.windowMs)}` : "off");
  const target = (t: { path: string } | { host: string; port: number }) => ("path" in t ? t.path : hostPort(t.host, t.port));
  return {
    allowlist: d.allowlist.map((x) => x.text),
    blocklist: d.blocklist.map((x) => x.text),
    connection_rate: d.connectionRate,
    dnsbl: d.dnsbl ? { zones: d.dnsbl.zones.map((z) => z.spec), threshold: d.dnsbl.threshold, negative_ttl: formatDuration(d.dnsbl.negativeTtlMs) } : null,
    greylist: d.greylist
      ? {
          delay: formatDuration(d.greylist.delayMs),
          retry_window: formatDuration(d.greylist.retryWindowMs),
          pass_ttl: formatDuration(d.greylist.passTtlMs),
          auto_allowlist_after: d.greylist.autoAllowlistAfter,
          allow_clients: d.greylist.allowClients.map((x) => x.text),
          allow_senders: d.greylist.allowSenders,
          allow_recipients: d.greylist.allowRecipients,
          new_triplets_per_network: limit(d.greylist.newTripletsPerNetwork),
          max_database_size: size(d.greylist.maxDatabaseSize),
        }
      : null,
    rate_limits: { per_ip: limit(d.rateLimits.perIp), per_sender_domain: limit(d.rateLimits.perSenderDomain) },
    authentication: d.authentication
      ? {
          authserv_id: d.authentication.authservId,
          spf_fail: d.authentication.policy.spfFail,
          dmarc_reject: d.authentication.policy.dmarcReject,
          temp_error: d.authentication.policy.tempError,
          max_dkim_signatures: d.authentication.maxDkimSignatures,
          max_arc_sets: d.authentication.maxArcSets,
          timeout: formatDuration(d.authentication.timeoutMs),
        }
      : null,
    spamd: d.spamd ? { address: target(d.spamd.target), timeout: formatDuration(d.spamd.timeoutMs), tag_score: d.spamd.tagScore, reject_score: d.spamd.rejectScore } : null,
    clamd: d.clamd ? { address: target(d.clamd.target), timeout: formatDuration(d.clamd.timeoutMs) } : null,
  };
}
