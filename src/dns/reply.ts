// Which DNS replies the stub resolver believes (RFC 5452 9.1): a response to the exact question
// asked (id, name in any case, type, class IN), and from it only the records for the asked name,
// directly or at the end of a CNAME chain that starts at that name and stays within the answer
// (RFC 1034 3.6.2, RFC 2181 5.4.1). Anything else in a reply is ignored, so an off-path spoofer
// must guess a random id and port, and an answer cannot smuggle in records for other names.

import type * as packet from "dns-packet";
import { parseIp } from "../net/cidr.ts";

export type Decoded = ReturnType<typeof packet.decode>;
type Record_ = NonNullable<Decoded["answers"]>[number];

export interface Question {
  readonly id: number;
  readonly name: string;
  readonly type: string;
}

/** CNAME links followed within one answer; a longer chain is treated as no answer. */
const MAX_CHAIN = 8;

/** A transaction id from the system's CSPRNG (RFC 5452 4.3), never Math.random. */
export function randomId(): number {
  return crypto.getRandomValues(new Uint16Array(1))[0]!;
}

/** Names compare case-insensitively and without a trailing dot (RFC 4343). */
export const canonicalName = (name: string): string => name.toLowerCase().replace(/\.$/, "");

/** True when `res` is a response to exactly `q`. */
export function answersQuestion(res: Decoded, q: Question): boolean {
  if (res.type !== "response" || res.id !== q.id || res.questions?.length !== 1) return false;
  const asked = res.questions[0]!;
  return canonicalName(asked.name) === canonicalName(q.name) && asked.type === q.type && (asked.class ?? "IN") === "IN";
}

/** True when a datagram came from the address and port the question was sent to. */
export function fromServer(rinfo: { address: string; port: number }, server: { host: string; port: number }): boolean {
  if (rinfo.port !== server.port) return false;
  const a = parseIp(rinfo.address);
  const b = parseIp(server.host);
  return !!a && !!b && a.v6 === b.v6 && a.value === b.value;
}

/** The `type` records for `name`, following a CNAME chain from `name` within the answer section. */
export function recordsFor(res: Decoded, name: string, type: string): Record_[] {
  const answers = (res.answers ?? []).filter((a) => (a as { class?: string }).class === undefined || (a as { class?: string }).class === "IN");
  let owner = canonicalName(name);
  for (let links = 0; links <= MAX_CHAIN; links++) {
    const direct = answers.filter((a) => a.type === type && canonicalName(a.name) === owner);
    if (direct.length || type === "CNAME") return direct;
    const cname = answers.find((a) => a.type === "CNAME" && canonicalName(a.name) === owner);
    if (!cname) return [];
    owner = canonicalName(String((cname as { data: unknown }).data));
  }
  return [];
}
