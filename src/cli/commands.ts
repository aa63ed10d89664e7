// The command line's grammar: every command, its verbs, the operands and options each takes,
// and the help text made from them. main.ts checks argv against it before anything runs, so a
// misspelt verb, a missing operand or an option a command does not take is a usage error
// (exit 2, the command's usage on stderr) instead of being silently ignored.

/** A usage error: exit status 2 and the usage of `command` (or the global usage). */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

interface Form {
  /** Operands after the verb, as shown in the usage ("ID", "DOMAIN [SELECTOR]"). */
  readonly operands?: string;
  /** How many operands: [min, max]. */
  readonly count?: readonly [number, number];
  /** Options besides --config/--embedded-config (which every command that reads a configuration takes). */
  readonly options?: readonly string[];
  /** Exactly one of these options must be given. */
  readonly oneOf?: readonly string[];
  /** One line saying what it does. */
  readonly does: string;
}

interface Command {
  /** Verb -> form; "" is the form without a verb. */
  readonly forms: Readonly<Record<string, Form>>;
  /** The verb used when none is given (queue -> ls); absent: a verb is required. */
  readonly defaultVerb?: string;
  /** False for commands that read no configuration (sink, version). */
  readonly config?: boolean;
}

const COMMANDS: Readonly<Record<string, Command>> = {
  serve: { forms: { "": { does: "run the relay (SMTP listeners, delivery, admin API); SIGHUP reloads" } } },
  "check-config": { forms: { "": { does: "validate the configuration and print the effective settings" } } },
  reload: {
    forms: { "": { options: ["pid"], does: "check the configuration, then make the running relay load it (what systemctl reload runs)" } },
  },
  queue: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["state", "domain", "older-than", "limit", "after", "json"], does: "list queued messages, oldest first" },
      show: { operands: "ID", count: [1, 1], options: ["json"], does: "envelope and per-recipient status of one message" },
      retry: { operands: "ID", count: [1, 1], options: ["json"], does: "make a message due now" },
      flush: { options: ["json"], does: "make every queued message due now" },
      rm: { operands: "ID", count: [1, 1], options: ["bounce", "silent", "json"], oneOf: ["bounce", "silent"], does: "delete a message, telling the sender (--bounce) or not (--silent)" },
    },
  },
  apikey: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["json"], does: "keys of the HTTP send API" },
      add: { operands: "NAME", count: [1, 1], options: ["domain", "rate", "json"], does: "a new key for --domain D [--rate 100/1h]; the token is shown once" },
      rm: { operands: "ID", count: [1, 1], does: "remove a key" },
    },
  },
  user: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["json"], does: "submission users" },
      add: { operands: "NAME", count: [1, 1], options: ["identity", "password-stdin"], does: "a user who may send as --identity ADDR|@DOMAIN (password typed, or --password-stdin)" },
      passwd: { operands: "NAME", count: [1, 1], options: ["password-stdin"], does: "change a user's password" },
      rm: { operands: "NAME", count: [1, 1], does: "remove a user" },
    },
  },
  dkim: {
    forms: {
      keygen: { operands: "DOMAIN", count: [1, 1], options: ["selector", "rsa-only", "ed25519-only", "force", "json"], does: "DKIM keys for a From: domain; prints the DNS records to publish" },
      activate: { operands: "DOMAIN SELECTOR", count: [1, 2], options: ["selector", "json"], does: "sign with another (published) selector from the next message on" },
      records: { operands: "DOMAIN", count: [1, 1], options: ["selector", "json"], does: "print the DNS records of existing keys again" },
    },
  },
  greylist: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["limit", "json"], does: "greylist triplets" },
      rm: { operands: "NETWORK [SENDER RECIPIENT]", count: [1, 3], options: ["json"], does: "remove one triplet, or every triplet of a network" },
    },
  },
  block: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["json"], does: "the dynamic IP blocklist" },
      add: { operands: "CIDR", count: [1, 1], options: ["for", "reason", "json"], does: "block a network [--for 24h] [--reason TEXT]" },
      rm: { operands: "CIDR", count: [1, 1], options: ["json"], does: "unblock a network" },
    },
  },
  cluster: {
    defaultVerb: "ls",
    forms: {
      ls: { options: ["json"], does: "the nodes sharing this node's Redis (cluster.enabled), each with its queue size" },
    },
  },
  backup: {
    forms: { "": { options: ["offline", "verify", "json"], does: "whole-service backup (queue, policy.db, DKIM keys, ACME, configuration) through the admin API, or directly with --offline; --verify DIR checks one against its manifest" } },
  },
  restore: {
    forms: { "": { operands: "BACKUP", count: [1, 1], options: ["force", "only", "json"], does: "put a backup in place (relay stopped; what it replaces is kept aside; --force if state exists)" } },
  },
  sink: { config: false, forms: { "": { options: ["listen", "dir"], does: "run a local test next hop that stores every message it receives" } } },
  version: { config: false, forms: { "": { does: "print the version" } } },
};

/** Each option as the usage shows it, and what it means. */
const OPTIONS: Readonly<Record<string, readonly [string, string]>> = {
  config: ["--config PATH", "configuration file (default /etc/mailraven/mailraven.yaml)"],
  "embedded-config": ["--embedded-config", "use the built-in local trial configuration instead of a file"],
  json: ["--json", "machine-readable output"],
  pid: ["--pid PID", "the relay's process (systemd passes $MAINPID); default: the holder of the state directory's lock"],
  state: ["--state queued|deferred", "only messages in this state"],
  domain: ["--domain D", "queue: only mail for this recipient domain; apikey add: a sender domain of the key (repeatable)"],
  "older-than": ["--older-than AGE", "only messages received longer ago than this, e.g. 2h"],
  limit: ["--limit N", "at most N entries"],
  after: ["--after ID", "the page after this queue id"],
  bounce: ["--bounce", "tell the sender with a bounce"],
  silent: ["--silent", "tell nobody"],
  rate: ["--rate N/PERIOD", "messages the key may send, e.g. 100/1h"],
  identity: ["--identity ADDR|@DOMAIN", "an address or domain the user may send as (repeatable)"],
  "password-stdin": ["--password-stdin", "read the password from standard input instead of the terminal"],
  selector: ["--selector S", "the DKIM selector (keygen default: mr<year><month>)"],
  "rsa-only": ["--rsa-only", "an RSA key only"],
  "ed25519-only": ["--ed25519-only", "an Ed25519 key only"],
  force: ["--force", "replace what is there"],
  for: ["--for DURATION", "block for this long, e.g. 24h (default: until removed)"],
  reason: ["--reason TEXT", "why, shown in block ls"],
  offline: ["--offline", "work on the state directory directly instead of through the admin API"],
  verify: ["--verify DIR", "check the backup in DIR against its manifest without restoring it"],
  only: ["--only PART,...", "restore only these parts: queue, policy, dkim, acme"],
  listen: ["--listen HOST:PORT", "address to listen on (default 127.0.0.1:2526)"],
  dir: ["--dir PATH", "where to store messages (default ./data/sink)"],
};

const optionLine = (name: string) => {
  const [form, help] = OPTIONS[name] ?? [`--${name}`, ""];
  return `  ${form.padEnd(26)}${help}`;
};

/** Options every command accepts whether or not it reads a configuration. */
const ALWAYS = new Set(["help", "version"]);

export function isCommand(name: string): boolean {
  return Object.hasOwn(COMMANDS, name);
}

const synopsis = (name: string, verb: string, f: Form) => `mailraven ${[name, verb, f.operands].filter(Boolean).join(" ")}`;

/** `mailraven help` / `mailraven --help`. */
export function globalUsage(version: string): string {
  const lines = Object.entries(COMMANDS).flatMap(([name, c]) =>
    Object.entries(c.forms).map(([verb, f]) => {
      const left = `  ${synopsis(name, verb, f).slice("mailraven ".length)}`;
      return left.length < 28 ? `${left.padEnd(28)}${f.does}` : `${left}\n${" ".repeat(28)}${f.does}`;
    }),
  );
  return `mailraven ${version}: an edge mail relay

Usage: mailraven <command> [options]
       mailraven <command> --help     that command's usage and options

Commands:
${lines.join("\n")}

Options:
${optionLine("config")}
${optionLine("embedded-config")}
  --json                    machine-readable output (queue, apikey, user ls, dkim, greylist, block, cluster, backup, restore)
  -h, --help                show this help
  --version                 print the version
`;
}

/** `mailraven <command> --help`: its forms and the options they take. */
export function commandUsage(name: string): string {
  const c = COMMANDS[name]!;
  const forms = Object.entries(c.forms);
  const options = [...(c.config === false ? [] : ["config", "embedded-config"]), ...new Set(forms.flatMap(([, f]) => f.options ?? []))];
  const lines = forms.map(([verb, f], i) => `${i === 0 ? "Usage: " : "       "}${synopsis(name, verb, f)}${(f.options ?? []).map((o) => ` [${OPTIONS[o]?.[0] ?? `--${o}`}]`).join("")}`);
  const does = forms.map(([verb, f]) => `  ${verb ? `${verb}: ` : ""}${f.does}`);
  return `${lines.join("\n")}\n\n${does.join("\n")}\n${c.defaultVerb ? `  (no verb: ${c.defaultVerb})\n` : ""}\nOptions:\n${[...options.map(optionLine), "  -h, --help                show this help"].join("\n")}\n`;
}

/**
 * Checks a command line against the grammar; throws UsageError naming the problem. `given` are
 * the options present on the command line (long names).
 */
export function checkUsage(name: string, positionals: readonly string[], given: readonly string[]): void {
  const c = COMMANDS[name];
  if (!c) throw new UsageError(`unknown command "${name}"`);
  const verbs = Object.keys(c.forms).filter((v) => v !== "");
  let verb = "";
  let operands = positionals;
  if (verbs.length) {
    verb = positionals[0] ?? c.defaultVerb ?? "";
    if (!verb) throw new UsageError(`mailraven ${name} needs one of: ${verbs.join(", ")}`, name);
    if (!verbs.includes(verb)) throw new UsageError(`unknown ${name} command "${verb}"; use ${verbs.join(", ")}`, name);
    operands = positionals.slice(1);
  }
  const form = c.forms[verb]!;
  const [min, max] = form.count ?? [0, 0];
  const what = `mailraven ${[name, verb].filter(Boolean).join(" ")}`;
  if (operands.length < min) throw new UsageError(`${what} needs ${form.operands}`, name);
  if (operands.length > max) throw new UsageError(`${what} takes ${max === 0 ? "no operands" : form.operands}; unexpected "${operands[max]}"`, name);
  const allowed = new Set([...ALWAYS, ...(c.config === false ? [] : ["config", "embedded-config"]), ...(form.options ?? [])]);
  const refused = given.find((o) => !allowed.has(o));
  if (refused) throw new UsageError(`${what} does not take --${refused}${refused === "json" ? " (it has no machine-readable output)" : ""}`, name);
  if (form.oneOf && form.oneOf.filter((o) => given.includes(o)).length !== 1) throw new UsageError(`${what} needs exactly one of ${form.oneOf.map((o) => `--${o}`).join(", ")}`, name);
}
