// MTA-STS policies the delivery thread learns outlive a restart in the policy state (local
// SQLite or Redis), which the SMTP thread owns: one connection, one Redis link, one set of
// fallbacks. The delivery thread asks for and hands over policies by message instead of
// opening a second policy state of its own.

import type { StsStore } from "./mta-sts.ts";

/** A policy the thread asked for, or a policy it learnt or dropped. */
export type StsRequest =
  | { readonly t: "sts-get"; readonly id: number; readonly domain: string }
  | { readonly t: "sts-save"; readonly domain: string; readonly json: string; readonly expiresAt: number }
  | { readonly t: "sts-remove"; readonly domain: string };

/** The answer to an "sts-get". */
export interface StsAnswer {
  readonly t: "sts";
  readonly id: number;
  readonly json: string | null;
}

/** The delivery thread's side: the policy state, reached through the SMTP thread. */
export class RemoteStsStore implements StsStore {
  private nextId = 1;
  private readonly waiting = new Map<number, (json: string | null) => void>();

  constructor(private readonly send: (request: StsRequest) => void) {}

  stsPolicy(domain: string): Promise<string | null> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.send({ t: "sts-get", id, domain });
    });
  }

  saveStsPolicy(domain: string, json: string, expiresAt: number): void {
    this.send({ t: "sts-save", domain, json, expiresAt });
  }

  removeStsPolicy(domain: string): void {
    this.send({ t: "sts-remove", domain });
  }

  answered(answer: StsAnswer): void {
    const resolve = this.waiting.get(answer.id);
    this.waiting.delete(answer.id);
    resolve?.(answer.json);
  }
}

/** The SMTP thread's side: serves a request from the policy state; a failed read is a miss. */
export function serveStsRequest(store: StsStore | null, request: StsRequest, reply: (answer: StsAnswer) => void): void {
  switch (request.t) {
    case "sts-get": {
      if (!store) return reply({ t: "sts", id: request.id, json: null });
      Promise.resolve()
        .then(() => store.stsPolicy(request.domain))
        .then(
          (json) => reply({ t: "sts", id: request.id, json }),
          () => reply({ t: "sts", id: request.id, json: null }),
        );
      return;
    }
    case "sts-save":
      return store?.saveStsPolicy(request.domain, request.json, request.expiresAt);
    case "sts-remove":
      return store?.removeStsPolicy(request.domain);
  }
}
