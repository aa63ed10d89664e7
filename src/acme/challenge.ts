// The HTTP-01 challenge responder (RFC 8555 8.3): a small HTTP server on acme.http_listen that
// answers GET /.well-known/acme-challenge/<token> with the key authorization, and 404 to
// anything else. It runs only while an order is in progress, so port 80 is open for seconds
// a few times a month, not for good.

import type { ListenAddress } from "../config/types.ts";
import type { Logger } from "../log.ts";

const PATH = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]{1,256})$/;

export interface ChallengeResponder {
  readonly port: number;
  set(token: string, keyAuthorization: string): void;
  delete(token: string): void;
  stop(): void;
}

/** Throws when the address cannot be bound (in use, or port 80 without CAP_NET_BIND_SERVICE). */
export function startChallengeResponder(address: ListenAddress, log: Logger): ChallengeResponder {
  const tokens = new Map<string, string>();
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: address.host,
      port: address.port,
      fetch(req, srv) {
        const token = PATH.exec(new URL(req.url).pathname)?.[1];
        const answer = token === undefined ? undefined : tokens.get(token);
        log.debug("acme challenge request", { client_ip: srv.requestIP(req)?.address, path: new URL(req.url).pathname, answered: answer !== undefined });
        if ((req.method !== "GET" && req.method !== "HEAD") || answer === undefined) return new Response("not found\n", { status: 404 });
        return new Response(answer, { headers: { "content-type": "application/octet-stream" } });
      },
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EADDRINUSE" ? "address already in use" : code === "EACCES" ? "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)" : (err as Error).message;
    throw new Error(`cannot listen on ${address.host}:${address.port} (acme.http_listen) for the HTTP-01 challenge: ${why}`);
  }
  log.debug("acme challenge responder listening", { address: address.host, port: server.port });
  return {
    port: server.port ?? address.port,
    set: (token, keyAuthorization) => void tokens.set(token, keyAuthorization),
    delete: (token) => void tokens.delete(token),
    stop: () => void server.stop(true),
  };
}
