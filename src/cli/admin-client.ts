// The command line's client for the admin API: finds it from the configuration (address,
// TLS, token) and turns its JSON errors into one readable line.

import type { Config } from "../config/types.ts";

export class CliError extends Error {}

export interface AdminClient {
  request(method: string, path: string, body?: unknown): Promise<unknown>;
}

export function adminClient(config: Config): AdminClient {
  const listen = config.admin.listen;
  if (!listen) throw new CliError("the admin API is disabled (admin.enabled: false); use --offline where available");
  const token = config.admin.token?.value;
  if (!token) throw new CliError("no admin token in the configuration (admin.token_file or admin.token_env)");
  // A wildcard listener is reached over loopback.
  const host = listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host === "::" ? "::1" : listen.host;
  const loopback = host === "localhost" || host === "::1" || host.startsWith("127.");
  const base = `${config.admin.tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${listen.port}`;
  return {
    async request(method, path, json) {
      let res: Response;
      try {
        res = await fetch(base + path, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { "content-type": "application/json" }) },
          ...(json === undefined ? {} : { body: JSON.stringify(json) }),
          // On loopback nobody can sit in the middle; the certificate names the public host anyway.
          ...(config.admin.tls && loopback ? { tls: { rejectUnauthorized: false } } : {}),
        });
      } catch (err) {
        throw new CliError(`cannot reach the admin API at ${base}: ${(err as Error).message}; is mailraven running?`);
      }
      const text = await res.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new CliError(`unexpected answer from ${base}${path} (HTTP ${res.status})`);
      }
      if (!res.ok) {
        const e = (body as { error?: { code?: string; message?: string } }).error;
        throw new CliError(`${e?.message ?? "request failed"} (HTTP ${res.status}${e?.code ? `, ${e.code}` : ""})`);
      }
      return body;
    },
  };
}
