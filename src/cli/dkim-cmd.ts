// `mailraven dkim keygen|activate|records`: DKIM keys in outbound.dkim_dir, and the DNS records
// that publish them, printed in zone-file form. Works on the files directly (no admin API):
// a running relay picks up changes with the next message (src/dkim/keys.ts).

import type { Config } from "../config/types.ts";
import { dropToOwnerOf } from "../backup/safe-fs.ts";
import { activateSelector, DkimKeyError, generateKeys, publishedRecords, type KeyKind, type TxtRecord } from "../dkim/keys.ts";
import { CliError } from "./admin-client.ts";
import { UsageError } from "./commands.ts";

export interface DkimArgs {
  /** What follows "dkim": the verb, then its operands. */
  readonly positionals: readonly string[];
  readonly selector?: string;
  readonly rsaOnly: boolean;
  readonly ed25519Only: boolean;
  readonly force: boolean;
  readonly json: boolean;
}

/** The default selector: "mr" and the UTC year and month, e.g. mr202611; rotate with a new one. */
export function defaultSelector(now: Date): string {
  return `mr${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
}

export async function dkimCommand(config: Config, a: DkimArgs, out: (s: string) => void, now = new Date()): Promise<number> {
  const dir = config.outbound.dkimDir;
  const [verb, domain, operand] = a.positionals;
  // Run as root (sudo), become the relay's user first: the keys are then its own, made
  // without chown and without root's power to write anywhere (and AppArmor grants no more).
  if (verb === "keygen" || verb === "activate") dropToOwnerOf(config.stateDir);
  try {
    switch (verb) {
      case "keygen": {
        if (!domain || operand !== undefined) throw new UsageError("mailraven dkim keygen takes one DOMAIN", "dkim");
        if (a.rsaOnly && a.ed25519Only) throw new UsageError("--rsa-only and --ed25519-only exclude each other", "dkim");
        const kinds: KeyKind[] = a.rsaOnly ? ["rsa"] : a.ed25519Only ? ["ed25519"] : ["rsa", "ed25519"];
        const r = generateKeys(dir, domain, a.selector ?? defaultSelector(now), kinds, { force: a.force });
        if (a.json) out(json({ domain: r.domain, selector: r.selector, active: r.active, active_selector: r.activeSelector, replaced: r.replaced, records: r.records.map(jsonRecord) }));
        else out(`${keygenNote(r.domain, r.selector, r.active, r.activeSelector, r.replaced, r.records[0]!.name).map((l) => `; ${l}\n`).join("")}${r.records.map(zoneLine).join("")}`);
        return 0;
      }
      case "activate": {
        const selector = operand ?? a.selector;
        if (!domain || !selector) throw new UsageError("mailraven dkim activate needs DOMAIN and SELECTOR", "dkim");
        const keys = activateSelector(dir, domain, selector);
        if (a.json) out(json({ domain: keys.domain, active_selector: keys.selector, keys: keys.keys.map((k) => ({ selector: k.selector, algorithm: k.algorithm })) }));
        else out(`${keys.domain}: mail is signed with selector ${keys.selector} from the next message on (${keys.keys.map((k) => `${k.algorithm} as s=${k.selector}`).join(", ")})\n`);
        return 0;
      }
      case "records": {
        if (!domain || operand !== undefined) throw new UsageError("mailraven dkim records takes one DOMAIN", "dkim");
        const r = publishedRecords(dir, domain, a.selector);
        if (a.json) out(json({ selector: r.selector, active: r.active, records: r.records.map(jsonRecord) }));
        else out(`; selector ${r.selector}${r.active ? " (active)" : " (not active)"}\n${r.records.map(zoneLine).join("")}`);
        return 0;
      }
      default:
        throw new UsageError(verb === undefined ? "mailraven dkim needs keygen, activate or records" : `unknown dkim command "${verb}"; use keygen, activate or records`, "dkim");
    }
  } catch (err) {
    if (err instanceof DkimKeyError) throw new CliError(err.message);
    throw err;
  }
}

function keygenNote(domain: string, selector: string, active: boolean, activeSelector: string, replaced: readonly KeyKind[], firstName: string): string[] {
  if (active && replaced.length) {
    return [
      `The ${replaced.join(" and ")} key(s) of ${domain}'s active selector ${selector} were replaced and sign its mail from the next`,
      `message on: publish these records now, in place of the old ones; until then receivers cannot verify.`,
    ];
  }
  if (active) {
    return [
      `${domain}'s mail is signed with selector ${selector} from the next message on. Publish these records;`,
      `until they are visible in DNS receivers cannot verify the signatures.`,
    ];
  }
  return [
    `New keys for ${domain} under selector ${selector}; its mail is still signed with selector ${activeSelector}.`,
    `Publish these records, check they are visible (dig +short TXT ${firstName}), then switch:`,
    `  mailraven dkim activate ${domain} ${selector}`,
    `Keep the old records published for a few days, for mail still on its way.`,
  ];
}

/** A TXT record ready to paste into a zone file; values over 255 bytes split into strings (RFC 1035 3.3.14). */
export function zoneLine(r: TxtRecord): string {
  const strings = chunks(r.value).map((s) => `"${s}"`);
  const rdata = strings.length === 1 ? strings[0] : `( ${strings.join("\n\t")} )`;
  return `${r.name}.\tIN\tTXT\t${rdata}\n`;
}

function chunks(value: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < value.length; i += 255) out.push(value.slice(i, i + 255));
  return out.length ? out : [""];
}

const jsonRecord = (r: TxtRecord) => ({ name: r.name, type: "TXT", kind: r.kind, selector: r.selector, value: r.value, strings: chunks(r.value) });
const json = (o: unknown) => `${JSON.stringify(o, null, 2)}\n`;
