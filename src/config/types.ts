// The validated, frozen configuration every other module receives. Durations are milliseconds,
// sizes are bytes; the YAML names (snake_case) are mapped in parse.ts.

import type { Cidr } from "../net/cidr.ts";
import type { LogLevel } from "../log.ts";

export interface Route {
  /** "mx": deliver to the domain's MX hosts (host is the domain), see outbound.mx_delivery. */
  readonly protocol: "smtp" | "lmtp" | "mx";
  readonly host: string;
  readonly port: number;
  /** As written in the config, used as the route's name in logs and the queue. */
  readonly uri: string;
  /** STARTTLS towards a configured route (?tls=); opportunistic when not given. MX routes follow outbound.tls_policy. */
  readonly tls?: TlsPolicy;
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
  /** IPv6 clients are counted, limited and blocked by their network of this many bits (net/cidr.ts clientKey). */
  readonly ipv6PrefixLength: number;
  /** Load balancers whose PROXY header (v1 or v2) gives the client's address; empty: none. */
  readonly proxyProtocol: { readonly trusted: readonly Cidr[] };
  /** Message content (DATA, or all the chunks of BDAT) must arrive within this. */
  readonly dataTimeoutMs: number;
  /** Bytes per second content must keep arriving at (Postfix's smtpd_min_data_rate); 0: none. */
  readonly minDataRate: number;
  /** NUL octets in content: removed, or the message refused (Postfix's message_strip_characters / message_reject_characters). */
  readonly nulBytes: "strip" | "reject";
  /** One header field, folded lines included (Postfix's header_size_limit); larger: 552 5.3.4. */
  readonly maxHeaderSize: number;
  /** The whole header section; larger: 552 5.3.4. */
  readonly maxHeaderSection: number;
  /** Error replies without a message accepted before the session is closed (Postfix's smtpd_hard_error_limit). */
  readonly errorLimit: number;
  /** A listener this full (percent of max_connections; 0: never) is under stress: shorter limits below. */
  readonly stress: { readonly threshold: number; readonly timeoutMs: number; readonly errorLimit: number };
}

/** Which recipients of one relay domain exist (config/recipients.ts). */
export interface DomainRecipients {
  /** Accepted addresses, lower case; "@domain" accepts every address of that domain. Null: no list. */
  readonly list: ReadonlySet<string> | null;
  /** Ask the domain's next hop whether the address exists (a RCPT probe, cached). */
  readonly verify: boolean;
  /** Where the list came from, as configured (for check-config). */
  readonly file: string | null;
  readonly inline: readonly string[] | null;
}

export interface RecipientVerificationConfig {
  readonly positiveTtlMs: number;
  readonly negativeTtlMs: number;
  /** A cached result older than this is probed again in the background while it still answers. */
  readonly positiveRefreshMs: number;
  readonly negativeRefreshMs: number;
  /** How long RCPT waits for a probe before answering 450 4.1.1 (the probe goes on and fills the cache). */
  readonly waitMs: number;
  /** Limit on one probe session. */
  readonly timeoutMs: number;
  /** Next hop unreachable, a 4xx, or no probe possible now: defer (450 4.1.1) or accept. */
  readonly unreachable: "defer" | "accept";
  readonly concurrencyPerHop: number;
  readonly probesPerHop: RateLimit;
}

export interface RelayConfig {
  /** Accepted recipient domain (lower case, ASCII) -> next hop. */
  readonly domains: ReadonlyMap<string, Route>;
  /** Recipient validation per relay domain; a domain without an entry accepts any local part. */
  readonly recipients: ReadonlyMap<string, DomainRecipients>;
  readonly recipientVerification: RecipientVerificationConfig;
  readonly relayNetworks: readonly Cidr[];
  /** Next hop for every other domain, used for mail from relay_networks and for bounces. */
  readonly smarthost: Route | null;
}

export interface QueueConfig {
  readonly retryScheduleMs: readonly number[];
  readonly inlineMaxSize: number;
  /** A recipient still deferred this long after arrival gets its sender one delay warning; 0: never. */
  readonly delayWarningMs: number;
  /** Free space the state directory keeps; below it MAIL gets "452 4.3.1" (Postfix's queue_minfree). */
  readonly minFreeSpace: number;
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
  /** Copy the files that *_file keys name for secrets (TLS keys, token files) into backups. */
  readonly includeSecrets: boolean;
}

/** A secret with where it came from; only `source` is ever printed. */
export interface Secret {
  readonly value: string;
  readonly source: string;
}

export interface DnsConfig {
  readonly servers: readonly { readonly host: string; readonly port: number }[];
  readonly timeoutMs: number;
  readonly attempts: number;
}

/** One DNS list: a hit is an A record matching `filter`, worth `weight` (negative for allowlists). */
export interface DnsblZone {
  readonly spec: string;
  readonly zone: string;
  /** Per octet: the accepted [min, max]; null accepts any answer. */
  readonly filter: readonly (readonly [number, number])[] | null;
  readonly weight: number;
}

export interface GreylistConfig {
  readonly delayMs: number;
  readonly retryWindowMs: number;
  readonly passTtlMs: number;
  /** A client network whose triplets passed this many times is allowlisted; 0 turns it off. */
  readonly autoAllowlistAfter: number;
  readonly allowClients: readonly Cidr[];
  readonly allowSenders: readonly string[];
  readonly allowRecipients: readonly string[];
  /** New triplets written per client network per window; null: no limit. */
  readonly newTripletsPerNetwork: RateLimit | null;
  /** policy.db size (bytes in use) past which no new triplet is written. */
  readonly maxDatabaseSize: number;
}

export interface RateLimit {
  readonly messages: number;
  readonly windowMs: number;
}

export interface ScannerTarget {
  readonly target: { readonly host: string; readonly port: number } | { readonly path: string };
  readonly timeoutMs: number;
}

export interface AuthPolicy {
  readonly spfFail: "reject" | "tag";
  readonly dmarcReject: boolean;
  readonly tempError: "defer" | "accept";
}

export interface DefensesConfig {
  readonly allowlist: readonly Cidr[];
  readonly blocklist: readonly Cidr[];
  /** New connections per client IP per minute; 0 turns the limit off. */
  readonly connectionRate: number;
  readonly dnsbl: { readonly zones: readonly DnsblZone[]; readonly threshold: number; readonly negativeTtlMs: number } | null;
  readonly greylist: GreylistConfig | null;
  readonly rateLimits: { readonly perIp: RateLimit | null; readonly perSenderDomain: RateLimit | null };
  readonly authentication: {
    readonly authservId: string;
    readonly policy: AuthPolicy;
    /** DKIM signatures verified per message (the bottom-most); the rest are reported as not checked. */
    readonly maxDkimSignatures: number;
    /** ARC chains longer than this are not verified (reported as not checked). */
    readonly maxArcSets: number;
    /** The whole check; past it the message is treated as after a DNS failure (temp_error). */
    readonly timeoutMs: number;
  } | null;
  readonly spamd: (ScannerTarget & { readonly tagScore: number; readonly rejectScore: number }) | null;
  readonly clamd: ScannerTarget | null;
}

export type StageName = "connect" | "mail" | "rcpt" | "content";

/** Optional checks, by stage, in the order they run (the mandatory ones always run first). */
export interface PipelineConfig {
  readonly connect: readonly ("blocklist" | "connection_rate" | "dnsbl")[];
  readonly mail: readonly "rate_limit"[];
  readonly rcpt: readonly "greylist"[];
  readonly content: readonly ("authentication" | "clamd" | "spamd")[];
}

export interface SubmissionConfig {
  /** 587: plain connections that must STARTTLS before AUTH. */
  readonly starttls: readonly ListenAddress[];
  /** 465: TLS from the first byte. */
  readonly implicitTls: readonly ListenAddress[];
  /** Chosen by SNI; the first is the default. */
  readonly certificates: readonly TlsFiles[];
  /** Messages per user per window. */
  readonly rateLimit: RateLimit | null;
  /** This many failed AUTHs from one IP within the window put it on the blocklist for block_for. */
  readonly authFailures: { readonly max: number; readonly windowMs: number; readonly blockForMs: number };
  /** Password checks running at once over all clients; an attempt beyond gets 454 4.7.0. */
  readonly authConcurrency: number;
  /** AUTH attempts per client (IPv4 address or IPv6 prefix) per window; null: no limit. */
  readonly authRateLimit: RateLimit | null;
}

/** How hard to insist on TLS towards a destination (deliver/tls-policy.ts). */
export type TlsPolicy = "none" | "opportunistic" | "required" | "verify";

export interface OutboundConfig {
  /** Deliver mail for domains without a route (from trusted or authenticated senders) to their MX hosts. */
  readonly mxDelivery: boolean;
  readonly tlsPolicy: { readonly default: TlsPolicy; readonly byDomain: ReadonlyMap<string, TlsPolicy> };
  /** Fetch and obey MTA-STS policies (RFC 8461) for MX delivery. */
  readonly mtaSts: boolean;
  /** MX host addresses never connected to (loopback by default); a domain left with none bounces. */
  readonly ignoreMxAddresses: readonly Cidr[];
  /** DKIM keys live here, one directory per domain (mailraven dkim keygen). */
  readonly dkimDir: string;
  /** Sign outbound mail (trusted or authenticated senders) whose From: domain has a key. */
  readonly dkimSign: boolean;
}

/** When Redis does not answer: the node's own state (local) or no limit at all (open). */
export type FallbackMode = "local" | "open";

/** Several nodes sharing their policy state in Redis or Valkey (src/state/redis.ts). */
export interface ClusterConfig {
  /** With the password in it, for the client only; never shown. */
  readonly url: string;
  /** The URL as check-config and the logs show it. */
  readonly shownUrl: string;
  readonly password: Secret | null;
  /** PEM bundle trusted for rediss:// instead of the system roots; null: the system roots. */
  readonly caFile: string | null;
  readonly keyPrefix: string;
  readonly nodeName: string;
  /** Longest wait for one Redis command; past it the node uses its fallback. */
  readonly timeoutMs: number;
  /** Backstop for missed change notices: how often the blocklist version is compared. */
  readonly refreshIntervalMs: number;
  /** How often this node announces itself (its key lives three times as long). */
  readonly heartbeatMs: number;
  readonly fallback: { readonly greylist: FallbackMode; readonly rate_limits: FallbackMode; readonly connection_rate: FallbackMode; readonly auth_failures: FallbackMode };
}

/** Certificates from an ACME CA (acme section); files under `dir`, see src/acme/. */
export interface AcmeConfig {
  /** The CA's directory URL (https). */
  readonly directory: string;
  /** Contact address given to the CA when the account is registered. */
  readonly email: string;
  /** Every name goes into one certificate (subjectAltName); lower case, ASCII. */
  readonly hostnames: readonly string[];
  /** Where the HTTP-01 challenge responder listens while an order is in progress. */
  readonly httpListen: ListenAddress;
  /** Renew when the certificate expires within this long (but not before half its lifetime). */
  readonly renewBeforeMs: number;
  /** PEM bundle trusted for the CA's HTTPS instead of the built-in roots; null: the built-in roots. */
  readonly caFile: string | null;
  /** state_dir/acme: account key, certificate key and chain. */
  readonly dir: string;
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
  readonly dns: DnsConfig;
  readonly defenses: DefensesConfig;
  readonly pipeline: PipelineConfig;
  /** Per relay domain overrides of defenses.authentication's policy. */
  readonly domainPolicy: ReadonlyMap<string, Partial<AuthPolicy>>;
  readonly outbound: OutboundConfig;
  readonly submission: SubmissionConfig | null;
  /** The HTTP send API; null when not configured. */
  readonly api: { readonly listen: ListenAddress; readonly tls: TlsFiles | null } | null;
  /** Automatic certificates for STARTTLS and submission; null when acme.enabled is not true. */
  readonly acme: AcmeConfig | null;
  /** Shared policy state in Redis; null: a single node (cluster.enabled is not true). */
  readonly cluster: ClusterConfig | null;
}
