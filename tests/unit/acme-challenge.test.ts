// The HTTP-01 responder: the key authorization for a known token, 404 for anything else, and a
// clear error when its address cannot be bound.

import { describe, expect, test } from "bun:test";
import { startChallengeResponder } from "../../src/acme/challenge.ts";
import { createLogger } from "../../src/log.ts";

const log = createLogger("error", () => {});

describe("challenge responder", () => {
  test("answers /.well-known/acme-challenge/<token> while the token is set, 404 otherwise", async () => {
    const r = startChallengeResponder({ host: "127.0.0.1", port: 0 }, log);
    try {
      const url = (path: string) => `http://127.0.0.1:${r.port}${path}`;
      r.set("tok_en-1", "tok_en-1.thumbprint");
      const ok = await fetch(url("/.well-known/acme-challenge/tok_en-1"));
      expect(ok.status).toBe(200);
      expect(await ok.text()).toBe("tok_en-1.thumbprint");
      expect((await fetch(url("/.well-known/acme-challenge/other"))).status).toBe(404);
      expect((await fetch(url("/.well-known/acme-challenge/tok_en-1/x"))).status).toBe(404);
      expect((await fetch(url("/"))).status).toBe(404);
      expect((await fetch(url("/.well-known/acme-challenge/tok_en-1"), { method: "POST" })).status).toBe(404);
      r.delete("tok_en-1");
      expect((await fetch(url("/.well-known/acme-challenge/tok_en-1"))).status).toBe(404);
    } finally {
      r.stop();
    }
  });

  test("an address in use is an error naming acme.http_listen", () => {
    const first = startChallengeResponder({ host: "127.0.0.1", port: 0 }, log);
    try {
      expect(() => startChallengeResponder({ host: "127.0.0.1", port: first.port }, log)).toThrow(
        `cannot listen on 127.0.0.1:${first.port} (acme.http_listen) for the HTTP-01 challenge: address already in use`,
      );
    } finally {
      first.stop();
    }
  });
});
