// The metrics admins alert on: which version runs, the process itself (memory, CPU, file
// descriptors, event-loop lag), the age of the oldest queued message, and every time an
// optional check let mail through because it could not do its job (scanner down, DNS list
// silent, DKIM key broken). The checks' daemons here are down on purpose: closed ports, a DNS
// server that never answers, a damaged key file.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BlackholeDns } from "../helpers/dns.ts";
import { BINARY, Relay, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { freeTcpPort } from "../helpers/scanners.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

let sink: Sink;
let hole: BlackholeDns;
let relay: Relay;
let apiPort = 0;

/** The samples of a metric on /metrics, by their label text ("" for none). */
async function samples(name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, "gm"))) out.set(m[1] ?? "", Number(m[2]));
  return out;
}
const value = async (name: string, labels = "") => (await samples(name)).get(labels);

beforeAll(async () => {
  [sink, hole] = await Promise.all([Sink.start({ rcpt: (a) => (a.endsWith("@held.test") ? { code: 451, message: "4.3.0 later" } : undefined) }), BlackholeDns.start()]);
  const [clamdPort, spamdPort] = [await freeTcpPort(), await freeTcpPort()]; // nothing listens there
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route, "held.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
      queue: { retry_schedule: ["1h"] },
      dns: { servers: [hole.address], timeout: "200ms", attempts: 1 },
      defenses: {
        connection_rate: 0,
        dnsbl: { zones: ["zen.test"], threshold: 1 },
        clamd: { address: `127.0.0.1:${clamdPort}`, timeout: "2s" },
        spamd: { address: `127.0.0.1:${spamdPort}`, timeout: "2s" },
      },
      api: { listen: "127.0.0.1:0" },
    },
  });
  apiPort = Number(relay.logs.find((l) => l.msg === "send api listening")!.port);
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([sink.close(), hole.stop()]);
}, 30_000);

describe("/metrics", () => {
  test("mailraven_build_info names the running version, with 1", async () => {
    const version = (await run([BINARY, "version"])).out.trim().split(" ")[1];
    const info = await samples("mailraven_build_info");
    expect([...info.entries()]).toEqual([[`version="${version}",bun="${Bun.version}"`, 1]]);
  });

  test("process metrics: resident memory, CPU time, open and maximum file descriptors, event-loop lag", async () => {
    expect(await value("process_resident_memory_bytes")).toBeGreaterThan(10 * 1024 * 1024);
    expect(await value("process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(await value("process_open_fds")).toBeGreaterThan(3);
    expect(await value("process_max_fds")).toBeGreaterThan(0);
    expect(await value("process_start_time_seconds")).toBeLessThanOrEqual(Date.now() / 1000);
    expect(await value("nodejs_eventloop_lag_p99_seconds")).toBeGreaterThanOrEqual(0);
    // JavaScriptCore has no V8 heap spaces: those would all read 0.
    expect((await samples("nodejs_heap_space_size_used_bytes")).size).toBe(0);
  });

  test("oldest queued message: 0 when the queue is empty, then the age of a message waiting for a retry", async () => {
    expect(await value("mailraven_queue_oldest_message_age_seconds")).toBe(0);
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    const r = await talk.transaction("alice@origin.test", ["bob@held.test"], "Subject: held\r\n\r\nwaiting\r\n");
    talk.close();
    expect(r.code).toBe(250);
    const id = /queued as (\S+)/.exec(r.text)![1]!;
    await relay.waitForLog((l) => l.msg === "delivery attempt" && l.queue_id === id && l.deferred === 1, 15_000);
    const shown = (await (await relay.admin("GET", `/admin/queue/${id}`)).json()) as { message: { received_at: string } };
    const expected = (Date.now() - Date.parse(shown.message.received_at)) / 1000;
    const age = (await value("mailraven_queue_oldest_message_age_seconds"))!;
    expect(age).toBeGreaterThan(0);
    expect(Math.abs(age - expected)).toBeLessThan(2);
  }, 30_000);

  test("fail-open events are counted per check: clamd and spamd down, DNS list silent, DKIM key damaged", async () => {
    const before = await samples("mailraven_check_fail_open_total");
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO client.test");
    const r = await talk.transaction("alice@origin.test", ["bob@dest.test"], "From: alice@origin.test\r\nSubject: unscanned\r\n\r\nhello\r\n");
    talk.close();
    expect(r.code).toBe(250); // let through, unscanned
    await waitFor(() => sink.messages.some((m) => m.raw.includes("unscanned")), 10_000, "delivery");

    // DKIM: a key whose file is damaged; the API's mail goes out unsigned and it is counted.
    const add = await run([BINARY, "apikey", "add", "app", "--domain", "corp.test", "--json", "--config", relay.configPath]);
    const keygen = await run([BINARY, "dkim", "keygen", "corp.test", "--selector", "s1", "--rsa-only", "--config", relay.configPath]);
    expect(keygen.code).toBe(0);
    writeFileSync(join(relay.dir, "state", "dkim", "corp.test", "s1.rsa.pem"), "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n");
    const sent = await fetch(`http://127.0.0.1:${apiPort}/api/v1/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${(JSON.parse(add.out) as { token: string }).token}`, "content-type": "application/json" },
      body: JSON.stringify({ from: "app@corp.test", to: ["carol@dest.test"], subject: "unsigned", text: "x" }),
    });
    expect(sent.status).toBe(202);
    await waitFor(() => sink.messages.some((m) => m.to.includes("carol@dest.test")), 10_000, "delivery");
    expect(sink.messages.find((m) => m.to.includes("carol@dest.test"))!.raw.toString()).not.toContain("DKIM-Signature");

    const after = await samples("mailraven_check_fail_open_total");
    const delta = (check: string) => (after.get(`check="${check}"`) ?? 0) - (before.get(`check="${check}"`) ?? 0);
    expect({ clamd: delta("clamd"), spamd: delta("spamd"), dnsbl: delta("dnsbl"), dkim_sign: delta("dkim_sign") }).toEqual({ clamd: 1, spamd: 1, dnsbl: 1, dkim_sign: 1 });
  }, 30_000);
});
