// mailraven: flags -> config -> subcommand. The only place that reads argv and exits.

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { effectiveConfig } from "./config/display.ts";
import { DEFAULT_CONFIG_PATH, loadConfig, type ConfigSource } from "./config/load.ts";
import { ConfigErrors } from "./config/reader.ts";
import { createLogger } from "./log.ts";
import { serve } from "./serve.ts";
import { runSink } from "./sink.ts";

declare const MAILRAVEN_VERSION: string | undefined;
const VERSION = typeof MAILRAVEN_VERSION === "string" ? MAILRAVEN_VERSION : "dev";

const USAGE = `mailraven ${VERSION}: an edge mail relay

Usage: mailraven <command> [options]

Commands:
  serve          run the relay (SMTP listeners and delivery)
  check-config   validate the configuration and print the effective settings
  sink           run a local test next hop that stores every message it receives
  version        print the version

Options:
  --config PATH        configuration file (default ${DEFAULT_CONFIG_PATH})
  --embedded-config    use the built-in local trial configuration instead of a file
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
        listen: { type: "string" },
        dir: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    process.stderr.write(`mailraven: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = positionals[0];
  if (values.help || command === "help" || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  const source: ConfigSource = values["embedded-config"] ? { kind: "embedded" } : { kind: "file", path: resolve(values.config ?? DEFAULT_CONFIG_PATH) };

  switch (command) {
    case "version":
      process.stdout.write(`mailraven ${VERSION}\n`);
      return 0;
    case "check-config": {
      const config = loadConfig(source);
      process.stdout.write(`# configuration is valid\n${Bun.YAML.stringify(effectiveConfig(config), null, 2)}\n`);
      return 0;
    }
    case "serve": {
      const config = loadConfig(source);
      const log = createLogger(config.logLevel);
      installCrashGuards(log);
      const running = await serve(config, log, VERSION);
      await new Promise<void>((done) => {
        const stop = () => void running.shutdown().then(done);
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      });
      return 0;
    }
    case "sink": {
      const log = createLogger("info");
      const [host, port] = splitHostPort(values.listen ?? "127.0.0.1:2526");
      const server = await runSink(host, port, resolve(values.dir ?? "data/sink"), log);
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
function installCrashGuards(log: ReturnType<typeof createLogger>): void {
  process.on("uncaughtException", (err) => log.error("uncaught exception", { error: err, stack: err.stack }));
  process.on("unhandledRejection", (err) => log.error("unhandled rejection", { error: err }));
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    // Expected failures (bad config, port taken) get one clear line; anything else its stack.
    const e = err as Error;
    process.stderr.write(`mailraven: ${err instanceof ConfigErrors || e.message?.startsWith("cannot listen") ? e.message : (e.stack ?? e)}\n`);
    process.exit(err instanceof ConfigErrors ? 78 : 1);
  },
);
