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
    },
    relay: {
      domains: Object.fromEntries([...c.relay.domains].map(([d, r]) => [d, r.uri])),
      relay_networks: c.relay.relayNetworks.map((x) => x.text),
      smarthost: c.relay.smarthost?.uri ?? null,
    },
    queue: {
      retry_schedule: c.queue.retryScheduleMs.map(formatDuration),
      inline_max_size: size(c.queue.inlineMaxSize),
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
    backup: { dir: c.backup.dir, keep: c.backup.keep },
  };
}
