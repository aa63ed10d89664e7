// /admin/users: submission users (passwords are set here, never shown).

import { Hono } from "hono";
import { UserError, type User, type UserStore } from "../users/store.ts";
import { ApiError, jsonObject } from "./errors.ts";

const body = (c: Parameters<typeof jsonObject>[0]) => jsonObject(c, '{"name": "alice", "password": "...", "identities": ["alice@example.org"]}');

const userJson = (u: User) => ({ name: u.name, identities: u.identities, created_at: new Date(u.createdAt).toISOString() });

const strings = (v: unknown, what: string): string[] => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw new ApiError(400, "bad_parameter", `${what} must be a list of strings`);
  return v as string[];
};
const text = (v: unknown, what: string): string => {
  if (typeof v !== "string") throw new ApiError(400, "bad_parameter", `${what} must be a string`);
  return v;
};

export function userRoutes(users: UserStore | null) {
  const app = new Hono();
  app.use("*", async (_c, next) => {
    if (!users) throw new ApiError(503, "submission_disabled", "submission is not configured (no submission section), so there are no users");
    await next();
  });
  // UserError messages are written for the operator (bad name, short password, unknown user).
  const guard = async <T>(f: () => Promise<T> | T): Promise<T> => {
    try {
      return await f();
    } catch (err) {
      if (err instanceof UserError) throw new ApiError(/^no user /.test(err.message) ? 404 : err.message.includes("already exists") ? 409 : 400, "bad_user", err.message);
      throw err;
    }
  };
  app.get("/", (c) => c.json({ users: users!.list().map(userJson) }));
  app.post("/", async (c) => {
    const b = await body(c);
    const user = await guard(() => users!.add(text(b.name, "name"), text(b.password, "password"), strings(b.identities, "identities")));
    return c.json(userJson(user), 201);
  });
  app.put("/:name/password", async (c) => {
    const b = await body(c);
    await guard(() => users!.setPassword(c.req.param("name"), text(b.password, "password")));
    return c.json({ name: c.req.param("name"), password_changed: true });
  });
  app.put("/:name/identities", async (c) => {
    const b = await body(c);
    return c.json(userJson(await guard(() => users!.setIdentities(c.req.param("name"), strings(b.identities, "identities")))));
  });
  app.delete("/:name", (c) => {
    if (!users!.remove(c.req.param("name"))) throw new ApiError(404, "not_found", `no user ${c.req.param("name")}`);
    return c.json({ name: c.req.param("name"), deleted: true });
  });
  return app;
}
