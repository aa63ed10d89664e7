// Serves the admin app with Bun.serve on admin.listen (loopback by default; TLS when configured).

import type { Server } from "bun";
import type { ListenAddress } from "../config/types.ts";
import type { TlsMaterial } from "../runtime.ts";
import type { Hono } from "hono";

export interface AdminServer {
  readonly port: number;
  stop(): Promise<void>;
}

export function startAdminServer(app: Hono, address: ListenAddress, tls: TlsMaterial | null, key = "admin.listen", maxRequestBodySize = 1_048_576): AdminServer {
  let server: Server<undefined>;
  try {
    server = Bun.serve({
      hostname: address.host,
      port: address.port,
      maxRequestBodySize,
      fetch: (req, srv) => app.fetch(req, srv),
      ...(tls ? { tls: { key: tls.key, cert: tls.cert } } : {}),
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot listen on ${address.host}:${address.port} (${key}): ${code === "EADDRINUSE" ? "address already in use" : (err as Error).message}`);
  }
  return { port: server.port ?? address.port, stop: () => server.stop() };
}

/** The client address of a request served by Bun.serve (the app's env is the server). */
export function requestIp(req: Request, env: unknown): string {
  return (env as Server<undefined> | undefined)?.requestIP(req)?.address ?? "unknown";
}
