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
import { readPassword, userCommand } from "./cli/user-cmd.ts";
import { dkimCommand } from "./cli/dkim-cmd.ts";
import { apiKeyCommand } from "./cli/apikey-cmd.ts";
import { ApiKeyError } from "./api/keys.ts";
import { UserError } from "./users/store.ts";
import { effectiveConfig } from "./config/display.ts";
import { DEFAULT_CONFIG_PATH, loadConfig, type ConfigSource } from "./config/load.ts";
import { ConfigErrors } from "./config/reader.ts";
import { createLogger, type Logger } from "./log.ts";
import { serve } from "./serve.ts";
import { runSink } from "./sink.ts";

declare const MAILRAVEN_VERSION: string | undefined;
const VERSION = typeof MAILRAVEN_VERSION === "string" ? MAILRAVEN_VERSION : "dev";

const USAGE = `mailraven ${VERSION}: an edge mail relay

Usage: mailraven <command> [options]

Commands:
  serve                     run the relay (SMTP listeners, delivery, admin API); SIGHUP reloads
  check-config              validate the configuration and print the effective settings
  queue ls [filters]        list queued messages (--state queued|deferred, --domain D,
                            --older-than 2h, --limit N, --after ID)
  queue show ID             envelope and per-recipient status of one message
  queue retry ID            make a message due now
  queue flush               make every queued message due now
  queue rm ID --bounce|--silent
                            delete a message, telling the sender or not
  apikey ls | add NAME --domain D [--rate 100/1h] | rm ID
                            keys of the HTTP send API (the token is shown once)
  user ls | add NAME --identity ADDR|@DOMAIN... | passwd NAME | rm NAME
                            submission users (password typed, or --password-stdin)
  dkim keygen DOMAIN [--selector S] [--rsa-only|--ed25519-only] [--force]
                            DKIM keys for a From: domain; prints the DNS records to publish
  dkim activate DOMAIN SELECTOR
                            sign with another (published) selector from the next message on
  dkim records DOMAIN [--selector S]
                            print the DNS records of existing keys again
  greylist ls | rm NETWORK [SENDER RECIPIENT]
                            greylist triplets; remove one, or every triplet of a network
  block ls | add CIDR [--for 24h] [--reason TEXT] | rm CIDR
                            the dynamic IP blocklist
  backup [--offline]        whole-service backup (queue, policy.db, DKIM keys, ACME, config)
                            through the admin API, or directly with --offline
  backup --verify DIR       check a backup against its manifest without restoring it
  restore BACKUP [--force] [--only queue|policy|dkim|acme]
                            put a backup in place (relay stopped; what it replaces is kept
                            aside; --force needed if state exists)
  sink                      run a local test next hop that stores every message it receives
  version                   print the version

Options:
  --config PATH        configuration file (default ${DEFAULT_CONFIG_PATH})
  --embedded-config    use the built-in local trial configuration instead of a file
  --json               machine-readable output (queue, backup, restore)
  --listen HOST:PORT   (sink) address to listen on (default 127.0.0.1:2526)
  --dir PATH           (sink) where to store messages (default ./data/sink)
  -h, --help           show this help
`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
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
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    process.stderr.write(`mailraven: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (v.help || command === "help" || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && !v.help ? 2 : 0;
  }
  const source: ConfigSource = v["embedded-config"] ? { kind: "embedded" } : { kind: "file", path: resolve(v.config ?? DEFAULT_CONFIG_PATH) };
  const configArgs = source.kind === "embedded" ? ["--embedded-config"] : ["--config", source.path];
  const out = (s: string) => process.stdout.write(s);

  switch (command) {
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
      const log = createLogger(config.logLevel);
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
    case "queue":
      return queueCommand(loadConfig(source), { positionals: rest, json: !!v.json, state: v.state, domain: v.domain?.[0], olderThan: v["older-than"], limit: v.limit, after: v.after, bounce: !!v.bounce, silent: !!v.silent }, out);
    case "backup":
      return backupCommand(loadConfig(source), { offline: !!v.offline, verify: v.verify, json: !!v.json, configPath: source.kind === "file" ? source.path : null, version: VERSION }, out);
    case "restore":
      return restoreCommand(loadConfig(source), { positionals: rest, force: !!v.force, only: v.only ?? [], json: !!v.json, configPath: source.kind === "file" ? source.path : null }, out);
    case "sink": {
      const log = createLogger("info");
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
      process.stderr.write(`mailraven: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

function splitHostPort(text: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text);
  if (!m) throw new ConfigErrors([`--listen: expected HOST:PORT such as 127.0.0.1:2526, found "${text}"`]);
  return [m[1]!, Number(m[2])];
}

/** A bug in one session must not take the relay down: log it and carry on. */
function installCrashGuards(log: Logger): void {
  process.on("uncaughtException", (err) => log.error("uncaught exception", { error: err, stack: err.stack }));
  process.on("unhandledRejection", (err) => log.error("unhandled rejection", { error: err }));
}

/** Expected failures get one clear line and their own exit status; anything else its stack. */
function exitStatus(err: unknown): number {
  const e = err as Error;
  if (err instanceof ConfigErrors) {
    process.stderr.write(`mailraven: ${e.message}\n`);
    return 78;
  }
  const expected = err instanceof CliError || err instanceof RestoreError || err instanceof BackupError || err instanceof UnsafePathError || err instanceof UserError || err instanceof ApiKeyError || /^(cannot listen|another mailraven)/.test(e.message ?? "");
  process.stderr.write(`mailraven: ${expected ? e.message : (e.stack ?? e)}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => process.exit(exitStatus(err)),
);
