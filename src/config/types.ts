// The validated, frozen configuration every other module receives. Durations are milliseconds,
// sizes are bytes; the YAML names (snake_case) are mapped in parse.ts.

import type { Cidr } from "../net/cidr.ts";
import type { LogLevel } from "../log.ts";

export interface Route {
  readonly protocol: "smtp" | "lmtp";
  readonly host: string;
  readonly port: number;
  /** As written in the config, used as the route's name in logs and the queue. */
  readonly uri: string;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface SmtpConfig {
  readonly listen: readonly ListenAddress[];
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly idleTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly maxMessageSize: number;
  readonly maxRecipients: number;
  readonly maxLineLength: number;
  readonly maxHops: number;
  readonly greetingDelayMs: number;
  readonly greetingAllowlist: readonly Cidr[];
  readonly shutdownTimeoutMs: number;
  readonly tls: TlsFiles | null;
}

export interface RelayConfig {
  /** Accepted recipient domain (lower case, ASCII) -> next hop. */
  readonly domains: ReadonlyMap<string, Route>;
  readonly relayNetworks: readonly Cidr[];
  /** Next hop for every other domain, used for mail from relay_networks and for bounces. */
  readonly smarthost: Route | null;
}

export interface QueueConfig {
  readonly retryScheduleMs: readonly number[];
  readonly inlineMaxSize: number;
}

export interface DeliveryConfig {
  readonly concurrencyPerRoute: number;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
  readonly idleConnectionTtlMs: number;
}

export interface AdminConfig {
  /** Null when admin.enabled is false. */
  readonly listen: ListenAddress | null;
  /** Null: no token configured, the /admin/* routes answer 503. */
  readonly token: Secret | null;
  readonly tls: TlsFiles | null;
}

export interface BackupConfig {
  readonly dir: string;
  readonly keep: number;
}

/** A secret with where it came from; only `source` is ever printed. */
export interface Secret {
  readonly value: string;
  readonly source: string;
}

export interface Config {
  readonly hostname: string;
  readonly stateDir: string;
  readonly logLevel: LogLevel;
  readonly smtp: SmtpConfig;
  readonly relay: RelayConfig;
  readonly queue: QueueConfig;
  readonly delivery: DeliveryConfig;
  readonly admin: AdminConfig;
  readonly backup: BackupConfig;
}
