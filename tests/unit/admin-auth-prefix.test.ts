// The admin API's failure throttle counts an IPv6 client's /64, like every other per-client limit.

import { expect, test } from "bun:test";
import { Hono } from "hono";
import { bearerAuth } from "../../src/admin/auth.ts";
import { ApiError } from "../../src/admin/errors.ts";
import { createLogger } from "../../src/log.ts";
import { createMetrics } from "../../src/metrics.ts";

const TOKEN = "a-token-of-at-least-thirty-two-characters";

function app(): Hono {
  const a = new Hono();
  a.use("/admin/*", bearerAuth({ token: () => TOKEN, clientIp: (req) => req.headers.get("x-peer") ?? "", log: createLogger("error", () => {}), metrics: createMetrics() }));
  a.get("/admin/ping", (c) => c.text("pong"));
  a.onError((err, c) => c.text(err.message, err instanceof ApiError ? err.status : 500));
  return a;
}

test("ten failures from ten addresses of one /64 throttle the eleventh address; the next /64 is not throttled", async () => {
  const a = app();
  const get = (peer: string, token = "wrong") => a.request("/admin/ping", { headers: { authorization: `Bearer ${token}`, "x-peer": peer } });
  for (let i = 1; i <= 10; i++) expect((await get(`2001:db8:5:6::${i}`)).status).toBe(401);
  expect((await get("2001:db8:5:6::99")).status).toBe(429);
  expect((await get("2001:db8:5:7::1")).status).toBe(401);
  expect((await get("2001:db8:5:7::1", TOKEN)).status).toBe(200);
  // IPv4 clients stay keyed by their address.
  for (let i = 0; i < 10; i++) expect((await get("192.0.2.1")).status).toBe(401);
  expect((await get("192.0.2.1")).status).toBe(429);
  expect((await get("192.0.2.2")).status).toBe(401);
});
