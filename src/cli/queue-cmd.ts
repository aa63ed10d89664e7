// `mailraven queue ls|show|retry|flush|rm`: the admin API's queue routes from a shell.

import type { Config } from "../config/types.ts";
import { adminClient } from "./admin-client.ts";
import { UsageError } from "./commands.ts";
import { table } from "./table.ts";

export interface QueueArgs {
  readonly positionals: readonly string[];
  readonly json: boolean;
  readonly state?: string;
  readonly domain?: string;
  readonly olderThan?: string;
  readonly limit?: string;
  readonly after?: string;
  readonly bounce: boolean;
  readonly silent: boolean;
}

type Summary = { id: string; sender: string; size: number; received_at: string; recipients: number; state: string; next_attempt_at: string; last_error: string | null };
type Recipient = { address: string; route: string; attempts: number; next_attempt_at: string; last_error: string | null };

export async function queueCommand(config: Config, a: QueueArgs, out: (s: string) => void): Promise<number> {
  const api = adminClient(config);
  const [verb, id] = a.positionals;
  const show = (body: unknown, text: () => string) => out(a.json ? `${JSON.stringify(body, null, 2)}\n` : text());
  const needId = () => {
    if (!id) throw new UsageError(`mailraven queue ${verb} needs a queue id`, "queue");
    return encodeURIComponent(id);
  };
  switch (verb) {
    case "ls":
    case undefined: {
      const q = new URLSearchParams();
      for (const [k, v] of [["state", a.state], ["domain", a.domain], ["older_than", a.olderThan], ["limit", a.limit], ["after", a.after]] as const) if (v !== undefined) q.set(k, v);
      const body = (await api.request("GET", `/admin/queue${q.size ? `?${q}` : ""}`)) as { messages: Summary[]; next: string | null };
      show(body, () =>
        table(
          ["ID", "STATE", "RECEIVED", "SIZE", "RCPTS", "NEXT ATTEMPT", "SENDER", "LAST ERROR"],
          body.messages.map((m) => [m.id, m.state, m.received_at, String(m.size), String(m.recipients), m.next_attempt_at, m.sender || "<>", (m.last_error ?? "").slice(0, 60)]),
        ) + (body.next ? `(more: --after ${body.next})\n` : `${body.messages.length} message(s)\n`),
      );
      return 0;
    }
    case "show": {
      const body = (await api.request("GET", `/admin/queue/${needId()}`)) as { message: Summary; recipients: Recipient[] };
      show(body, () => {
        const m = body.message;
        return (
          `id:        ${m.id}\nsender:    ${m.sender || "<>"}\nreceived:  ${m.received_at}\nsize:      ${m.size}\nstate:     ${m.state}\n\n` +
          table(["RECIPIENT", "ROUTE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"], body.recipients.map((r) => [r.address, r.route, String(r.attempts), r.next_attempt_at, r.last_error ?? ""]))
        );
      });
      return 0;
    }
    case "retry": {
      const body = (await api.request("POST", `/admin/queue/${needId()}/retry`)) as { recipients_rescheduled: number };
      show(body, () => `${id}: ${body.recipients_rescheduled} recipient(s) due now\n`);
      return 0;
    }
    case "flush": {
      const body = (await api.request("POST", "/admin/queue/flush")) as { recipients_rescheduled: number };
      show(body, () => `${body.recipients_rescheduled} recipient(s) due now\n`);
      return 0;
    }
    case "rm": {
      if (a.bounce === a.silent) throw new UsageError("mailraven queue rm needs --bounce (the sender is told) or --silent", "queue");
      const body = await api.request("DELETE", `/admin/queue/${needId()}?mode=${a.bounce ? "bounce" : "silent"}`);
      show(body, () => `${id}: deleted${a.bounce ? ", sender notified" : ""}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown queue command "${verb}"; use ls, show, retry, flush or rm`, "queue");
  }
}
