// The admin API as an operator uses it: health, metrics, auth, queue control, and the CLI.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { request } from "node:http";
import parsePrometheus from "parse-prometheus-text-format";
import { ADMIN_TOKEN, BINARY, queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

let sink: Sink;
let relay: Relay;

beforeAll(async () => {
  // held.test is deferred by the next hop, so its mail stays queued for the queue routes.
  sink = await Sink.start({ rcpt: (a) => (a.endsWith("@held.test") ? { code: 451, message: "4.3.0 later" } : undefined) });
  relay = await Relay.start({
    config: { relay: { domains: { "dest.test": sink.route, "held.test": sink.route, "origin.test": sink.route } }, queue: { retry_schedule: ["1h", "1h", "1h", "1h", "1h"] } },
  });
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

async function send(from: string, to: string[], subject: string): Promise<string> {
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const r = await talk.transaction(from, to, `Subject: ${subject}\r\n\r\nbody\r\n`);
  talk.close();
  expect(r.code).toBe(250);
  return r.text.slice(-16);
}

async function json(res: Response): Promise<Record<string, unknown>> {
  expect(res.headers.get("content-type")).toContain("application/json");
  return (await res.json()) as Record<string, unknown>;
}

const cli = (...args: string[]) => exec([BINARY, ...args, "--config", relay.cliConfigPath()]);

describe("health and metrics", () => {
  test("GET /health needs no token and reports readiness", async () => {
    const res = await relay.admin("GET", "/health", null);
    expect(res.status).toBe(200);
    expect(await json(res)).toEqual({ status: "ok", queue_writable: true, low_disk_space: false, disk_free_bytes: expect.any(Number), smtp_listeners: 1 });
  });

  test("GET /metrics is valid Prometheus text with the relay's counters", async () => {
    await send("m@origin.test", ["bob@dest.test"], "metrics");
    await waitFor(() => sink.messages.some((m) => m.from === "m@origin.test"), 10_000, "delivery");
    // The delivery thread sends its metric deltas to the registry with its next batch of
    // messages, a moment after the sink has the mail: the attempt shows up within that moment.
    const scrape = async () => {
      const res = await relay.admin("GET", "/metrics", null);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/plain");
      return parsePrometheus(await res.text());
    };
    const delivered = (fams: Awaited<ReturnType<typeof scrape>>) =>
      (fams.find((f) => f.name === "mailraven_delivery_attempts_total")?.metrics as { labels: Record<string, string> }[] | undefined)?.some((m) => m.labels.outcome === "delivered" && m.labels.route === sink.route);
    const families = await waitFor(async () => {
      const fams = await scrape();
      return delivered(fams) ? fams : null;
    }, 5_000, "the delivered attempt in /metrics");
    const get = (name: string) => families.find((f) => f.name === name);
    const value = (name: string) => Number((get(name)?.metrics[0] as { value?: string } | undefined)?.value);
    expect(value("mailraven_messages_accepted_total")).toBeGreaterThanOrEqual(1);
    expect(value("mailraven_smtp_connections_total")).toBeGreaterThanOrEqual(1);
    expect(get("mailraven_accept_duration_seconds")?.type).toBe("HISTOGRAM");
    expect(get("mailraven_delivery_latency_seconds")?.type).toBe("HISTOGRAM");
    const attempts = get("mailraven_delivery_attempts_total")!.metrics as { labels: Record<string, string>; value: string }[];
    expect(attempts.find((m) => m.labels.outcome === "delivered" && m.labels.route === sink.route)).toBeDefined();
    expect(get("mailraven_queue_messages")?.type).toBe("GAUGE");
    for (const n of ["mailraven_backups_total", "mailraven_backup_last_success_timestamp_seconds", "mailraven_smtp_connections_rejected_total", "mailraven_messages_rejected_total"]) {
      expect(get(n)).toBeDefined();
    }
  });
});

describe("authentication", () => {
  test("no token, a wrong token, or another scheme: 401 with WWW-Authenticate and no detail", async () => {
    for (const headers of [{} as Record<string, string>, { authorization: "Bearer wrong-token" }, { authorization: `Basic ${btoa(`admin:${ADMIN_TOKEN}`)}` }, { authorization: `Bearer ${ADMIN_TOKEN}x` }]) {
      const res = await fetch(`http://127.0.0.1:${relay.adminPort}/admin/queue`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="mailraven"');
      expect(await json(res)).toEqual({ error: { code: "unauthorized", message: "authentication required" } });
    }
    const line = await relay.waitForLog((l) => l.msg === "admin authentication failed");
    expect(line.client_ip).toBe("127.0.0.1");
    expect(JSON.stringify(relay.logs)).not.toContain(ADMIN_TOKEN);
  });

  test("a client that keeps failing gets 429 with Retry-After; the right token from the same address still gets in", async () => {
    const from = (token: string) =>
      new Promise<{ status: number; retryAfter: string | undefined }>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port: relay.adminPort, path: "/admin/queue", localAddress: "127.0.0.5", headers: { authorization: `Bearer ${token}` } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined });
        });
        req.on("error", reject);
        req.end();
      });
    for (let i = 0; i < 10; i++) expect((await from("guess-" + i)).status).toBe(401);
    const blocked = await from("guess-10");
    expect(blocked.status).toBe(429);
    expect(Number(blocked.retryAfter)).toBeGreaterThan(0);
    // Any local user can make those failures; the nightly backup holding the token is not locked out.
    expect((await from(ADMIN_TOKEN)).status).toBe(200);
    expect((await from("guess-11")).status).toBe(429);
    expect((await relay.admin("GET", "/admin/queue")).status).toBe(200);
  });

  test("the right token gets in; unknown routes are JSON 404s", async () => {
    expect((await relay.admin("GET", "/admin/queue")).status).toBe(200);
    const res = await relay.admin("GET", "/admin/nothing-here");
    expect(res.status).toBe(404);
    expect((await json(res)).error).toMatchObject({ code: "not_found" });
  });
});

describe("queue control", () => {
  let held: string;
  beforeAll(async () => {
    held = await send("alice@origin.test", ["carol@held.test"], "held one");
    await waitFor(() => relay.logs.some((l) => l.msg === "delivery attempt" && l.queue_id === held), 10_000, "the first attempt");
  }, 60_000);

  test("list, filter and page", async () => {
    const all = await json(await relay.admin("GET", "/admin/queue"));
    const messages = all.messages as Record<string, unknown>[];
    const m = messages.find((x) => x.id === held)!;
    expect(m).toMatchObject({ sender: "alice@origin.test", recipients: 1, deferred_recipients: 1, state: "deferred" });
    expect(String(m.last_error)).toContain("451");
    expect(((await json(await relay.admin("GET", "/admin/queue?state=queued"))).messages as unknown[]).length).toBe(0);
    expect(((await json(await relay.admin("GET", "/admin/queue?domain=held.test"))).messages as { id: string }[]).map((x) => x.id)).toContain(held);
    expect(((await json(await relay.admin("GET", "/admin/queue?domain=dest.test"))).messages as unknown[]).length).toBe(0);
    expect(((await json(await relay.admin("GET", "/admin/queue?older_than=1h"))).messages as unknown[]).length).toBe(0);
    const page = await json(await relay.admin("GET", "/admin/queue?limit=1"));
    expect(page.next).toBe((page.messages as { id: string }[])[0]!.id);
    for (const bad of ["state=lost", "limit=0", "limit=abc", "older_than=soon", "after=../../x", "domain=a%20b"]) {
      const res = await relay.admin("GET", `/admin/queue?${bad}`);
      expect(res.status).toBe(400);
      expect((await json(res)).error).toMatchObject({ code: expect.stringMatching(/^bad_/) });
    }
  });

  test("show one message with per-recipient status", async () => {
    const body = await json(await relay.admin("GET", `/admin/queue/${held}`));
    const recipients = body.recipients as Record<string, unknown>[];
    expect(recipients).toHaveLength(1);
    expect(recipients[0]).toMatchObject({ address: "carol@held.test", route: sink.route, attempts: 1 });
    expect((await relay.admin("GET", "/admin/queue/0000000000000000")).status).toBe(404);
    expect((await relay.admin("GET", "/admin/queue/not-an-id")).status).toBe(400);
  });

  test("retry makes it due now: a second attempt happens", async () => {
    const res = await json(await relay.admin("POST", `/admin/queue/${held}/retry`));
    expect(res).toEqual({ id: held, recipients_rescheduled: 1 });
    await waitFor(() => relay.logs.filter((l) => l.msg === "delivery attempt" && l.queue_id === held).length === 2, 10_000, "the second attempt");
    const flush = await json(await relay.admin("POST", "/admin/queue/flush"));
    expect(flush.recipients_rescheduled).toBe(1);
  });

  test("the CLI shows the same queue, as a table and as JSON", async () => {
    const ls = await cli("queue", "ls");
    expect(ls.code).toBe(0);
    expect(ls.out).toMatch(/^ID\s+STATE\s+RECEIVED/);
    expect(ls.out).toContain(held);
    const show = await cli("queue", "show", held, "--json");
    expect(JSON.parse(show.out).message.id).toBe(held);
    const bad = await cli("queue", "rm", held);
    expect(bad.code).toBe(2); // a usage error
    expect(bad.err).toContain("--bounce");
  });

  test("delete needs a mode; with bounce the sender is told, silently nobody is", async () => {
    expect((await relay.admin("DELETE", `/admin/queue/${held}`)).status).toBe(400);
    const res = await json(await relay.admin("DELETE", `/admin/queue/${held}?mode=bounce`));
    expect(res).toEqual({ id: held, deleted: true, bounced: true });
    const dsn = await waitFor(() => sink.messages.find((m) => m.from === "" && m.to[0] === "alice@origin.test"), 10_000, "the bounce");
    expect(dsn.raw.toString()).toContain("Deleted from the queue by the administrator");
    expect((await relay.admin("DELETE", `/admin/queue/${held}?mode=bounce`)).status).toBe(404);

    const quiet = await send("dave@origin.test", ["erin@held.test"], "silent one");
    const rm = await cli("queue", "rm", quiet, "--silent");
    expect(rm.code).toBe(0);
    await Bun.sleep(300);
    expect(sink.messages.some((m) => m.from === "" && m.to[0] === "dave@origin.test")).toBe(false);
    expect(queueCounts(relay.dir).messages).toBe(0);
  });
});
