// A reload that drops a domain from relay.domains (a typo, a bad merge) must not bounce the
// mail already queued for it: the mail is deferred on the retry schedule, logged as an error
// and counted, and delivered once the route is back.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let relay: Relay;

function setDomains(domains: Record<string, string>): void {
  const doc = JSON.parse(readFileSync(relay.configPath, "utf8")) as Record<string, Record<string, unknown>>;
  doc.relay!.domains = domains;
  writeFileSync(relay.configPath, JSON.stringify(doc, null, 2));
}

async function reload(): Promise<void> {
  const before = relay.count("configuration reloaded");
  relay.proc.kill("SIGHUP");
  await waitFor(() => relay.count("configuration reloaded") > before, 10_000, "the reload");
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
}

beforeAll(async () => {
  sink = await Sink.start({ rcpt: () => ({ code: 451, message: "4.3.0 try later" }) });
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route, "other.test": sink.route } }, queue: { retry_schedule: ["1h", "1h"] } } });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 30_000);

test("queued mail whose route was removed by a reload is deferred and counted, not bounced, and goes out when the route is back", async () => {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction("alice@origin.test", ["bob@dest.test"], "Subject: waiting\r\n\r\nstill here\r\n");
  expect(r.code).toBe(250);
  talk.close();
  // The first attempt is deferred by the next hop: the message waits in the queue.
  await waitFor(() => relay.logs.some((l) => l.msg === "delivery attempt" && l.deferred === 1), 10_000, "the first attempt");

  setDomains({ "other.test": sink.route }); // dest.test is gone
  await reload();
  const flushed = await relay.admin("POST", "/admin/queue/flush");
  expect(flushed.status).toBe(200);
  const line = await relay.waitForLog((l) => l.msg.startsWith("no route for queued mail"));
  expect(line.level).toBe("error");
  expect(line.rcpt).toEqual(["bob@dest.test"]);
  // Recorded as a deferral: a second attempt counted, the reason kept, the next one scheduled.
  const recipient = await waitFor(async () => {
    const list = (await (await relay.admin("GET", "/admin/queue")).json()) as { messages: { id: string }[] };
    const shown = (await (await relay.admin("GET", `/admin/queue/${list.messages[0]!.id}`)).json()) as { recipients: { attempts: number; last_error: string | null; next_attempt_at: string }[] };
    return shown.recipients[0]!.attempts === 2 ? shown.recipients[0]! : null;
  }, 10_000, "the deferral to be recorded");
  expect(recipient.last_error).toStartWith("4.4.4 ");
  expect(Date.parse(recipient.next_attempt_at)).toBeGreaterThan(Date.now() + 30 * 60_000);
  expect(await metric("mailraven_delivery_no_route_total")).toBe(1);
  // Still queued, no bounce to alice, nothing failed.
  expect(queueCounts(relay.dir)).toEqual({ messages: 1, recipients: 1 });
  expect(relay.count("bounce queued")).toBe(0);
  expect(relay.count("recipient failed")).toBe(0);

  // The route is back (and the next hop accepts again): the mail goes out.
  await sink.close();
  sink = await Sink.start();
  setDomains({ "dest.test": sink.route, "other.test": sink.route });
  await reload();
  expect((await relay.admin("POST", "/admin/queue/flush")).status).toBe(200);
  await waitFor(() => sink.messages.length === 1, 10_000, "delivery once the route is back");
  expect(sink.messages[0]!.to).toEqual(["bob@dest.test"]);
  await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "the queue to empty");
}, 60_000);
