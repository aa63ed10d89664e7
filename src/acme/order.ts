// One certificate order (RFC 8555 7.4) with acme-client: register or find the account, order
// one certificate for all the names, answer the HTTP-01 challenges from our own responder,
// finalize with a fresh RSA-2048 key, download the chain. acme-client (and its axios, forge
// and x509 dependencies) is loaded on the first order, not at start-up.

import { generateKeyPair } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { promisify } from "node:util";
import type { AcmeConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import { startChallengeResponder } from "./challenge.ts";

/** Per HTTP request to the CA; axios has no time limit of its own, and a CA that hangs must not hold the order forever. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface OrderRequest {
  readonly config: AcmeConfig;
  readonly accountKey: Buffer;
  readonly log: Logger;
}

export interface Issued {
  readonly key: Buffer;
  readonly chain: Buffer;
}

export type OrderFn = (req: OrderRequest) => Promise<Issued>;

export const orderCertificate: OrderFn = async ({ config, accountKey, log }) => {
  const ca = config.caFile ? readFileSync(config.caFile) : null;
  await reachDirectory(config.directory, ca);
  const acme = await import("acme-client");
  // These are the defaults of acme-client's own axios instance, the one it sends every request
  // with. The CA's certificate is always verified: against ca_file when given (a private CA,
  // or Pebble in the tests), else against the built-in roots.
  acme.axios.defaults.timeout = REQUEST_TIMEOUT_MS;
  acme.axios.defaults.httpsAgent = ca ? new Agent({ ca }) : undefined;
  // acme-client retries 5xx, 429 and network errors itself, 5 times with growing waits (75 s in
  // all); two quick ones are enough here, the manager retries the whole order with backoff.
  Object.assign((acme.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings, { retryMaxAttempts: 2, retryDefaultDelay: 1 });

  const responder = startChallengeResponder(config.httpListen, log);
  try {
    const { privateKey } = await promisify(generateKeyPair)("rsa", { modulusLength: 2048 });
    const key = Buffer.from(privateKey.export({ type: "pkcs8", format: "pem" }));
    const [first] = config.hostnames;
    // The CN is limited to 64 characters (RFC 5280); the names that count are the subjectAltNames.
    const [, csr] = await acme.crypto.createCsr({ altNames: [...config.hostnames], ...(first && first.length <= 64 ? { commonName: first } : {}) }, key);
    const client = new acme.Client({ directoryUrl: config.directory, accountKey, backoffAttempts: 10, backoffMin: 1000, backoffMax: 10_000 });
    const chain = await client.auto({
      csr,
      email: config.email,
      termsOfServiceAgreed: true,
      challengePriority: ["http-01"],
      // acme-client would first fetch the challenge itself, through the system resolver and
      // often through NAT that does not loop back; the CA's own check is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        responder.set(challenge.token, keyAuthorization);
        log.debug("acme challenge ready", { hostname: authz.identifier.value, token: challenge.token });
      },
      challengeRemoveFn: async (_authz, challenge) => {
        responder.delete(challenge.token);
      },
    });
    return { key, chain: Buffer.from(chain) };
  } catch (err) {
    // acme-client 5.4 loses the error of a request that got no answer at all (and was retried)
    // in a TypeError about `config` (publishlab/node-acme-client#101).
    if (err instanceof TypeError && /config/.test(err.message)) throw new Error("a request to the CA got no answer (refused, reset or timed out); acme-client does not say which");
    throw err;
  } finally {
    responder.stop();
  }
};

/**
 * Fetches the directory first, for a clear error in the usual cases (CA unreachable, its
 * certificate not trusted, a wrong URL) before acme-client is involved, whose errors for
 * requests that got no answer say nothing about the cause.
 */
async function reachDirectory(url: string, ca: Buffer | null): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), ...(ca ? { tls: { ca: ca.toString() } } : {}) });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code && !e.message.startsWith(e.code) ? `${e.code}: ${e.message}` : e.message || e.code;
    throw new Error(`cannot reach the ACME directory ${url}: ${why}`);
  }
  const body = res.ok ? ((await res.json().catch(() => null)) as { newOrder?: unknown } | null) : null;
  if (!body || typeof body.newOrder !== "string") throw new Error(`${url} is not an ACME directory (HTTP ${res.status}${res.ok ? ", no newOrder URL" : ""})`);
}
