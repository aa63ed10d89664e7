// The cluster section (several nodes sharing their policy state in Redis or Valkey) and
// smtp.proxy_protocol (the real client address from a load balancer in front of the nodes).

import { hostname as osHostname } from "node:os";
import { resolve } from "node:path";
import { parseCidr, type Cidr } from "../net/cidr.ts";
import { join, type Obj, Reader, type SecretSources } from "./reader.ts";
import type { ClusterConfig, FallbackMode } from "./types.ts";

/** The shared checks whose Redis trouble can fail open instead of using the node's own state. */
export const FALLBACK_KEYS = ["greylist", "rate_limits", "connection_rate", "auth_failures"] as const;
const MODES: readonly FallbackMode[] = ["local", "open"];

export function parseCluster(r: Reader, value: unknown, secrets: SecretSources, cwd: string): ClusterConfig | null {
  const path = "cluster";
  const o = r.section(value, path, ["enabled", "redis", "password", "password_file", "password_env", "ca_file", "key_prefix", "node_name", "timeout", "refresh_interval", "heartbeat", "fallback"]);
  const enabled = o.enabled ?? false;
  if (typeof enabled !== "boolean") r.fail(join(path, "enabled"), "true or false", enabled);
  if (enabled !== true) return null;
  const url = redisUrl(r, o);
  const password = r.secret(o, "password", path, secrets, 1);
  if (password && url?.password) r.problems.push(`${path}.redis: the URL carries a password and cluster.password* is set too; keep one (better password_file)`);
  const caFile = o.ca_file === undefined || o.ca_file === null ? null : resolve(cwd, r.string(o, "ca_file", path, ""));
  if (caFile && url && url.protocol !== "rediss:") r.problems.push(`${path}.ca_file: only used with a rediss:// URL (TLS); found ${url.protocol}//`);
  const prefix = r.string(o, "key_prefix", path, "mailraven:");
  if (/[\s*?[\]]/.test(prefix)) r.fail(join(path, "key_prefix"), 'a key prefix without spaces or glob characters, such as "mailraven:"', prefix);
  const nodeName = r.string(o, "node_name", path, osHostname());
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(nodeName)) r.fail(join(path, "node_name"), "a name of letters, digits, dots, dashes and underscores (default: the host name)", nodeName);
  const timeoutMs = r.duration(o, "timeout", path, 250, 10);
  if (timeoutMs > 5000) r.fail(join(path, "timeout"), 'a duration of at most "5s" (every SMTP reply may wait this long for Redis)', o.timeout);
  const fb = r.section(o.fallback, join(path, "fallback"), FALLBACK_KEYS);
  return {
    url: url ? withPassword(url, password?.value ?? null) : "redis://127.0.0.1:6379",
    shownUrl: url ? shown(url) : "redis://127.0.0.1:6379",
    password: password ?? null,
    caFile,
    keyPrefix: prefix,
    nodeName,
    timeoutMs,
    refreshIntervalMs: r.duration(o, "refresh_interval", path, 10_000, 1000),
    heartbeatMs: r.duration(o, "heartbeat", path, 5_000, 1000),
    fallback: Object.fromEntries(FALLBACK_KEYS.map((k) => [k, r.oneOf(fb, k, join(path, "fallback"), MODES, "local")])) as ClusterConfig["fallback"],
  };
}

function redisUrl(r: Reader, o: Obj): URL | undefined {
  const text = r.string(o, "redis", "cluster", "redis://127.0.0.1:6379");
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url || !(url.protocol === "redis:" || url.protocol === "rediss:") || !url.hostname || !/^\/?(\d{1,2})?$/.test(url.pathname) || url.search || url.hash) {
    return r.fail("cluster.redis", 'a URL such as "redis://10.0.0.9:6379/0" or "rediss://redis.internal:6380" (TLS)', text.replace(/\/\/[^@/]*@/, "//(redacted)@"));
  }
  return url;
}

function withPassword(url: URL, password: string | null): string {
  if (password === null) return url.href;
  const u = new URL(url.href);
  u.password = encodeURIComponent(password);
  return u.href;
}

/** The URL as check-config and the logs show it: never a password. */
function shown(url: URL): string {
  if (!url.password) return url.href;
  const u = new URL(url.href);
  u.password = "redacted";
  return u.href;
}

/** smtp.proxy_protocol: load balancers allowed to send a PROXY header (v1 or v2); none by default. */
export function parseProxyProtocol(r: Reader, value: unknown): { readonly trusted: readonly Cidr[] } {
  const path = "smtp.proxy_protocol";
  const o = r.section(value, path, ["trusted"]);
  const list = r.list(o, "trusted", path) ?? [];
  const trusted = list.flatMap((item, i) => {
    const c = typeof item === "string" ? parseCidr(item.trim()) : undefined;
    return c ? [c] : (r.fail(join(join(path, "trusted"), i), 'the address or network of a load balancer, such as "10.0.0.2/32"', item) ?? []);
  });
  return { trusted };
}
