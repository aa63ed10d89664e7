// The Received: trace header (RFC 5321 4.4) we prepend to every accepted message.

import type { ClientInfo } from "../checks/types.ts";

export interface TraceInfo {
  readonly client: ClientInfo;
  readonly byHost: string;
  readonly protocol: string;
  readonly queueId: string;
  readonly tls: { readonly version: string; readonly cipher: string } | null;
  /** Only set for a single recipient: naming one of several would leak Bcc recipients (RFC 5321 7.2). */
  readonly forRecipient: string | null;
  readonly date: Date;
}

export function receivedHeader(t: TraceInfo): string {
  const helo = clean(t.client.helo) || "unknown";
  // smtp-server reports "[ip]" when there is no reverse name; say so the usual way.
  const rdns = (!t.client.hostname.startsWith("[") && clean(t.client.hostname)) || "unknown";
  const tls = t.tls ? `\r\n\t(using ${clean(t.tls.version)} with cipher ${clean(t.tls.cipher)})` : "";
  const forClause = t.forRecipient ? `\r\n\tfor <${clean(t.forRecipient)}>` : "";
  return (
    `Received: from ${helo} (${rdns} [${t.client.ip}])${tls}\r\n` +
    `\tby ${t.byHost} (mailraven) with ${t.protocol} id ${t.queueId}${forClause};\r\n` +
    `\t${rfc5322Date(t.date)}\r\n`
  );
}

/**
 * Client-supplied text in a header: printable ASCII without parentheses, angle brackets, quotes
 * or ";" (which starts the date for a parser, hiding the client's address behind it), bounded.
 */
function clean(s: string): string {
  return s.replace(/[^\x21-\x7e]|[()<>\\;"]/g, "").slice(0, 255);
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n: number) => String(n).padStart(2, "0");

export function rfc5322Date(d: Date): string {
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}
