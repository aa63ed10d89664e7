// `mailraven user add|passwd|rm|ls`: submission users, written straight to the queue database
// (works whether the relay runs or not; it reads users at each AUTH).

import { join } from "node:path";
import { dropToOwnerOf, plainEntry } from "../backup/safe-fs.ts";
import type { Config } from "../config/types.ts";
import { UserStore } from "../users/store.ts";
import { CliError } from "./admin-client.ts";
import { UsageError } from "./commands.ts";
import { table } from "./table.ts";

export interface UserArgs {
  readonly positionals: readonly string[];
  readonly identities: readonly string[];
  readonly passwordStdin: boolean;
  readonly json: boolean;
}

export async function userCommand(config: Config, a: UserArgs, out: (s: string) => void, readPassword: () => Promise<string>): Promise<number> {
  // Run as root (sudo), become the relay's user first: the -wal and -shm files SQLite may create
  // beside queue.db stay the relay's, and a symlink planted in queue.db's place is refused.
  dropToOwnerOf(config.stateDir);
  plainEntry(join(config.stateDir, "queue.db"));
  const users = UserStore.open(config.stateDir);
  try {
    const [verb, name] = a.positionals;
    const need = () => {
      if (!name) throw new UsageError(`mailraven user ${verb} needs a user name`, "user");
      return name;
    };
    switch (verb) {
      case "ls":
      case undefined: {
        const list = users.list();
        out(a.json ? `${JSON.stringify(list, null, 2)}\n` : table(["USER", "IDENTITIES", "CREATED"], list.map((u) => [u.name, u.identities.join(" "), new Date(u.createdAt).toISOString()])));
        return 0;
      }
      case "add": {
        const user = await users.add(need(), await readPassword(), a.identities);
        out(`user ${user.name} added; may send as ${user.identities.join(", ")}\n`);
        return 0;
      }
      case "passwd":
        await users.setPassword(need(), await readPassword());
        out(`password of ${name} changed\n`);
        return 0;
      case "rm":
        if (!users.remove(need())) throw new CliError(`no user ${name}`);
        out(`user ${name} removed\n`);
        return 0;
      default:
        throw new UsageError(`unknown user command "${verb}"; use ls, add, passwd or rm`, "user");
    }
  } finally {
    users.close();
  }
}

/** Reads a password: the first line of stdin, or typed at the terminal without echo. */
export async function readPassword(fromStdin: boolean): Promise<string> {
  const stdin = process.stdin;
  if (fromStdin || !stdin.isTTY) {
    const text = await new Response(Bun.stdin.stream()).text();
    return text.split(/\r?\n/)[0] ?? "";
  }
  process.stderr.write("Password: ");
  stdin.setRawMode(true);
  stdin.resume();
  let password = "";
  try {
    for await (const chunk of stdin as AsyncIterable<Buffer>) {
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return password;
        if (ch === "\u0003") throw new CliError("cancelled");
        if (ch === "\u007f") password = password.slice(0, -1);
        else password += ch;
      }
    }
    return password;
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write("\n");
  }
}
