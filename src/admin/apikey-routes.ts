// /admin/apikeys: keys of the HTTP send API. The secret is returned once, at creation.

import { Hono } from "hono";
import { ApiKeyError, type ApiKey, type ApiKeyStore } from "../api/keys.ts";
import { ApiError, jsonObject } from "./errors.ts";

const keyJson = (k: ApiKey) => ({
  id: k.id,
  name: k.name,
  domains: k.domains,
  rate_limit: k.rateLimit ? `${k.rateLimit.messages}/${k.rateLimit.windowMs / 1000}s` : null,
  created_at: new Date(k.createdAt).toISOString(),
});

export function apiKeyRoutes(keys: ApiKeyStore | null) {
  const app = new Hono();
  app.use("*", async (_c, next) => {
    if (!keys) throw new ApiError(503, "api_disabled", "the send API is not configured (no api section)");
    await next();
  });
  app.get("/", (c) => c.json({ keys: keys!.list().map(keyJson) }));
  app.post("/", async (c) => {
    const b = await jsonObject(c, '{"name": "billing app", "domains": ["example.org"], "rate_limit": "100/1h"}');
    if (typeof b.name !== "string" || !Array.isArray(b.domains) || b.domains.some((d) => typeof d !== "string") || (b.rate_limit !== undefined && typeof b.rate_limit !== "string")) {
      throw new ApiError(400, "bad_parameter", "name (string), domains (list of strings) and optional rate_limit (such as 100/1h) are required");
    }
    try {
      const { key, token } = keys!.create(b.name, b.domains as string[], (b.rate_limit as string | undefined) ?? null);
      return c.json({ ...keyJson(key), token }, 201);
    } catch (err) {
      if (err instanceof ApiKeyError) throw new ApiError(400, "bad_parameter", err.message);
      throw err;
    }
  });
  app.delete("/:id", (c) => {
    if (!keys!.remove(c.req.param("id"))) throw new ApiError(404, "not_found", `no key ${c.req.param("id")}`);
    return c.json({ id: c.req.param("id"), deleted: true });
  });
  return app;
}
