// `mailraven apikey add|ls|rm`: keys of the HTTP send API, written straight to the queue database.

import { ApiKeyStore } from "../api/keys.ts";
import { join } from "node:path";
import { dropToOwnerOf, plainEntry } from "../backup/safe-fs.ts";
import type { Config } from "../config/types.ts";
import { CliError } from "./admin-client.ts";
import { UsageError } from "./commands.ts";
import { table } from "./table.ts";

export interface ApiKeyArgs {
  readonly positionals: readonly string[];
  readonly domains: readonly string[];
  readonly rate?: string;
  readonly json: boolean;
}

export function apiKeyCommand(config: Config, a: ApiKeyArgs, out: (s: string) => void): number {
  // Run as root (sudo), become the relay's user first: the -wal and -shm files SQLite may create
  // beside queue.db stay the relay's, and a symlink planted in queue.db's place is refused.
  dropToOwnerOf(config.stateDir);
  plainEntry(join(config.stateDir, "queue.db"));
  const keys = ApiKeyStore.open(config.stateDir);
  try {
    const [verb, arg] = a.positionals;
    switch (verb) {
      case "ls":
      case undefined: {
        const list = keys.list();
        out(a.json ? `${JSON.stringify(list, null, 2)}\n` : table(["ID", "NAME", "DOMAINS", "RATE", "CREATED"], list.map((k) => [k.id, k.name, k.domains.join(" "), k.rateLimit ? `${k.rateLimit.messages}/${k.rateLimit.windowMs / 1000}s` : "-", new Date(k.createdAt).toISOString()])));
        return 0;
      }
      case "add": {
        if (!arg) throw new UsageError("usage: mailraven apikey add NAME --domain example.org [--domain ...] [--rate 100/1h]", "apikey");
        const { key, token } = keys.create(arg, a.domains, a.rate ?? null);
        out(a.json ? `${JSON.stringify({ ...key, token }, null, 2)}\n` : `key ${key.id} (${key.name}) for ${key.domains.join(", ")}\n${token}\nThis token is shown once; store it where the application reads it.\n`);
        return 0;
      }
      case "rm":
        if (!arg || !keys.remove(arg)) throw arg ? new CliError(`no key ${arg}`) : new UsageError("usage: mailraven apikey rm ID", "apikey");
        out(`key ${arg} removed\n`);
        return 0;
      default:
        throw new UsageError(`unknown apikey command "${verb}"; use ls, add or rm`, "apikey");
    }
  } finally {
    keys.close();
  }
}
