// mailraven: flags -> config -> subcommand. The only place that reads argv and exits.

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { RestoreError } from "./backup/restore.ts";
import { UnsafePathError } from "./backup/safe-fs.ts";
import { BackupError } from "./backup/snapshot.ts";
import { backupCommand, restoreCommand } from "./cli/backup-cmd.ts";
import { CliError } from "./cli/admin-client.ts";
import { queueCommand } from "./cli/queue-cmd.ts";
import { blockCommand, greylistCommand } from "./cli/policy-cmd.ts";
import { clusterCommand } from "./cli/cluster-cmd.ts";
import { readPassword, userCommand } from "./cli/user-cmd.ts";
import { dkimCommand } from "./cli/dkim-cmd.ts";
import { apiKeyCommand } from "./cli/apikey-cmd.ts";
import { checkUsage, commandUsage, globalUsage, isCommand, UsageError } from "./cli/commands.ts";
import { reloadCommand } from "./cli/reload-cmd.ts";
import { ApiKeyError } from "./api/keys.ts";
import { UserError } from "./users/store.ts";
import { effectiveConfig } from "./config/display.ts";
import { DEFAULT_CONFIG_PATH, loadConfig, type ConfigSource } from "./config/load.ts";
import { ConfigErrors } from "./config/reader.ts";
import { createLogger, installCrashGuards, isJournalStream, stdoutWriter } from "./log.ts";
import { serve } from "./serve.ts";
import { runSink } from "./sink.ts";
import { StateLocked } from "./state-lock.ts";

declare const MAILRAVEN_VERSION: string | undefined;
const VERSION = typeof MAILRAVEN_VERSION === "string" ? MAILRAVEN_VERSION : "dev";

const PARSE_OPTIONS = {
  config: { type: "string" },
  "embedded-config": { type: "boolean" },
  json: { type: "boolean" },
  offline: { type: "boolean" },
  force: { type: "boolean" },
  verify: { type: "string" },
  only: { type: "string", multiple: true },
  bounce: { type: "boolean" },
  silent: { type: "boolean" },
  state: { type: "string" },
  domain: { type: "string", multiple: true },
  "older-than": { type: "string" },
  limit: { type: "string" },
  after: { type: "string" },
  reason: { type: "string" },
  identity: { type: "string", multiple: true },
  rate: { type: "string" },
  selector: { type: "string" },
  "rsa-only": { type: "boolean" },
  "ed25519-only": { type: "boolean" },
  "password-stdin": { type: "boolean" },
  for: { type: "string" },
  listen: { type: "string" },
  dir: { type: "string" },
  pid: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: PARSE_OPTIONS });
  } catch (err) {
    const named = argv.find((a) => isCommand(a));
    throw new UsageError((err as Error).message, named);
  }
  const { values: v, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (command === undefined || command === "help") {
    const about = rest[0];
    if (about !== undefined && isCommand(about)) return (process.stdout.write(commandUsage(about)), 0);
    if (about !== undefined) throw new UsageError(`unknown command "${about}"`);
    if (v.version) return (process.stdout.write(`mailraven ${VERSION}\n`), 0);
    if (!v.help && command === undefined) throw new UsageError("no command given");
    process.stdout.write(globalUsage(VERSION));
    return 0;
  }
  if (!isCommand(command)) throw new UsageError(`unknown command "${command}"`);
  if (v.help) return (process.stdout.write(commandUsage(command)), 0);
  checkUsage(command, rest, Object.keys(v).filter((k) => v[k as keyof typeof v] !== undefined));
  const source: ConfigSource = v["embedded-config"] ? { kind: "embedded" } : { kind: "file", path: resolve(v.config ?? DEFAULT_CONFIG_PATH) };
  const configArgs = source.kind === "embedded" ? ["--embedded-config"] : ["--config", source.path];
  const out = (s: string) => process.stdout.write(s);

  switch (command) {
    case "reload":
      return reloadCommand(loadConfig(source), v.pid, out);
    case "version":
      out(`mailraven ${VERSION}\n`);
      return 0;
    case "check-config": {
      const config = loadConfig(source);
      out(`# configuration is valid\n${Bun.YAML.stringify(effectiveConfig(config), null, 2)}\n`);
      return 0;
    }
    case "serve": {
      const config = loadConfig(source);
      const log = createLogger(config.logLevel, stdoutWriter(process.env.JOURNAL_STREAM));
      installCrashGuards(log);
      const running = await serve(config, log, VERSION, { reloadConfig: () => loadConfig(source), configArgs });
      process.on("SIGHUP", () => running.reload());
      await new Promise<void>((done) => {
        const stop = () => void running.shutdown().then(done);
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      });
      return 0;
    }
    case "dkim":
      return dkimCommand(loadConfig(source), { positionals: rest, selector: v.selector, rsaOnly: !!v["rsa-only"], ed25519Only: !!v["ed25519-only"], force: !!v.force, json: !!v.json }, out);
    case "apikey":
      return apiKeyCommand(loadConfig(source), { positionals: rest, domains: v.domain ?? [], rate: v.rate, json: !!v.json }, out);
    case "user":
      return userCommand(loadConfig(source), { positionals: rest, identities: v.identity ?? [], passwordStdin: !!v["password-stdin"], json: !!v.json }, out, () =>
        readPassword(!!v["password-stdin"]),
      );
    case "greylist":
      return greylistCommand(loadConfig(source), { positionals: rest, json: !!v.json, limit: v.limit }, out);
    case "block":
      return blockCommand(loadConfig(source), { positionals: rest, json: !!v.json, reason: v.reason, for: v.for }, out);
    case "cluster":
      return clusterCommand(loadConfig(source), { json: !!v.json }, out);
    case "queue":
      return queueCommand(loadConfig(source), { positionals: rest, json: !!v.json, state: v.state, domain: v.domain?.[0], olderThan: v["older-than"], limit: v.limit, after: v.after, bounce: !!v.bounce, silent: !!v.silent }, out);
    case "backup":
      return backupCommand(loadConfig(source), { offline: !!v.offline, verify: v.verify, json: !!v.json, configPath: source.kind === "file" ? source.path : null, version: VERSION }, out);
    case "restore":
      return restoreCommand(loadConfig(source), { positionals: rest, force: !!v.force, only: v.only ?? [], json: !!v.json, configPath: source.kind === "file" ? source.path : null }, out);
    case "sink": {
      const log = createLogger("info", stdoutWriter(process.env.JOURNAL_STREAM));
      const [host, port] = splitHostPort(v.listen ?? "127.0.0.1:2526");
      const server = await runSink(host, port, resolve(v.dir ?? "data/sink"), log);
      await new Promise<void>((done) => {
        const stop = () => server.close(() => done());
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      });
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function splitHostPort(text: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text);
  if (!m) throw new ConfigErrors([`--listen: expected HOST:PORT such as 127.0.0.1:2526, found "${text}"`]);
  return [m[1]!, Number(m[2])];
}

/** On the journal, every line of a failure to start is filed as an error (see log.ts). */
function writeError(text: string): void {
  process.stderr.write(isJournalStream(process.env.JOURNAL_STREAM, 2) ? text.replace(/^(?=.)/gm, "<3>") : text);
}

/** Expected failures get one clear line and their own exit status; anything else its stack. */
function exitStatus(err: unknown): number {
  const e = err as Error;
  if (err instanceof UsageError) {
    writeError(`mailraven: ${e.message}\n\n${err.command ? commandUsage(err.command) : globalUsage(VERSION)}`);
    return 2;
  }
  if (err instanceof ConfigErrors) {
    writeError(`mailraven: ${e.message}\n`);
    return 78;
  }
  const expected = err instanceof CliError || err instanceof RestoreError || err instanceof BackupError || err instanceof UnsafePathError || err instanceof UserError || err instanceof ApiKeyError || err instanceof StateLocked || /^cannot listen/.test(e.message ?? "");
  writeError(`mailraven: ${expected ? e.message : (e.stack ?? e)}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => process.exit(exitStatus(err)),
);
