// The monitoring kit against the real thing: a relay with the example defenses (a DNS list
// answered by dnsmasq, greylisting) and STARTTLS, scraped by a real Prometheus (Debian's
// package, on loopback, with the admin token). After some traffic, every query of the Grafana
// dashboard (contrib/grafana/mailraven.json) is evaluated by that Prometheus and must return
// without error, the panels whose metrics the relay exports must return data, and the alert
// rules load and evaluate without error on the relay's real series.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import nodemailer from "nodemailer";
import { DnsServer } from "../helpers/dns.ts";
import { Prometheus } from "../helpers/prometheus.ts";
import { ADMIN_TOKEN, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const ROOT = resolve(import.meta.dir, "../..");
const DASHBOARD = join(ROOT, "contrib/grafana/mailraven.json");
const RULES = join(ROOT, "contrib/prometheus/mailraven-rules.yml");
const HAVE_PROMETHEUS = Bun.which("prometheus") !== null;

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string; legendFormat?: string }[];
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { uid: string; title: string; panels: Panel[]; templating: { list: { name: string }[] } };
const panels = dashboard.panels.filter((p) => p.type !== "row");

/** What Grafana does before sending a query: its macros and the dashboard's variables. */
const asGrafanaSends = (expr: string, rateInterval = "1m") => expr.replaceAll("$__rate_interval", rateInterval).replaceAll("$__interval", "15s").replaceAll("$job", "mailraven").replaceAll("$instance", ".*");

/** Metrics the dashboard and the rules use that other branches add (see the report); they may be absent here. */
const ADDED_ELSEWHERE = new Set([
  "mailraven_redis_degraded", // issue 12 (several nodes sharing Redis)
]);

/** Panels with nothing to show after this traffic, and why. */
const EMPTY_HERE = [
  "Backups", // backups per hour by outcome: no backup yet, so no outcome series (the duration has data)
  "Checks failing open", // every check worked: the labelled counter has no series
  "Failing routes", // every delivery succeeded: no deferred or failed series
  "Last good backup", // no backup yet: the stat shows "No data" rather than 56 years
  "Queue depth", // recipients by state: everything was delivered, no state has recipients (messages: 0 has data)
  "SMTP AUTH", // no submission listener: the labelled counter has no series
];

const metricNames = (expr: string) => new Set([...expr.matchAll(/\b((?:mailraven|process)_[a-z0-9_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, "")));

describe.skipIf(!HAVE_PROMETHEUS)("dashboard and alert rules on a real Prometheus scraping a real relay", () => {
  let work: string;
  let dns: DnsServer;
  let sink: Sink;
  let relay: Relay;
  let prometheus: Prometheus;
  let certNotAfter: number;
  const send = async (secure: boolean) => {
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: relay.port, secure: false, ignoreTLS: !secure, requireTLS: secure, tls: { rejectUnauthorized: false } });
    await transport.sendMail({ from: "news@known.test", to: "bob@dest.test", subject: `tls ${secure}`, text: "hello\n" });
  };

  beforeAll(async () => {
    work = tempDir("mailraven-monitoring-");
    const cert = { cert_file: join(work, "tls.pem"), key_file: join(work, "tls.key") };
    expect((await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", cert.key_file, "-out", cert.cert_file, "-days", "30", "-subj", "/CN=mx.mon.test", "-addext", "subjectAltName=DNS:mx.mon.test"])).code).toBe(0);
    certNotAfter = Date.parse(new X509Certificate(readFileSync(cert.cert_file)).validTo) / 1000;
    // 127.0.0.5 is on the DNS list; everyone else is clean.
    dns = await DnsServer.start({ a: { "5.0.0.127.bl.mon.test": "127.0.0.2" } });
    sink = await Sink.start({ tls: { key: readFileSync(cert.key_file), cert: readFileSync(cert.cert_file) } });
    relay = await Relay.start({
      config: {
        hostname: "mx.mon.test",
        relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] },
        smtp: { tls: cert },
        dns: { servers: [dns.address], timeout: "500ms", attempts: 1 },
        defenses: { dnsbl: { zones: ["bl.mon.test"] }, greylist: { delay: "1m", allow_senders: ["known.test"] }, connection_rate: 0 },
      },
    });
    // Counters with labels appear at their first increment, and rate() starts counting from a
    // series' first sample: one message before Prometheus starts gives the delivery and
    // greylisting series a sample of their own, so the traffic after it shows in the rates.
    await send(false);
    await waitFor(() => sink.messages.length === 1, 15_000, "the warm-up delivery");
    prometheus = await Prometheus.start(join(work, "prometheus"), { targets: [`127.0.0.1:${relay.adminPort}`], token: ADMIN_TOKEN, ruleFiles: [RULES] });
    await prometheus.waitFor(async () => (await prometheus.targets()).some((t) => t.health === "up"), 30_000, "the relay's scrape target up");
    // The traffic: two messages over STARTTLS and one in clear text (all delivered over TLS to
    // the next hop), a greylisted sender, a relay attempt, a client on the DNS list.
    for (const secure of [true, true, false]) await send(secure);
    const { talk } = await SmtpTalk.open(relay.port);
    await talk.send("EHLO stranger.test");
    await talk.send("MAIL FROM:<someone@stranger.test>");
    expect((await talk.send("RCPT TO:<bob@dest.test>")).code).toBe(451);
    expect((await talk.send("RCPT TO:<someone@elsewhere.test>")).code).toBe(554);
    talk.close();
    const listed = await SmtpTalk.open(relay.port, { localAddress: "127.0.0.5" });
    expect(listed.greeting.code).toBe(554);
    listed.talk.close();
    await waitFor(() => sink.messages.length === 4, 15_000, "three more deliveries");
    // Prometheus has scraped all of it, and every counter series born meanwhile has the two
    // samples a rate needs (three, to be safe).
    await prometheus.waitFor(async () => Number((await prometheus.query("sum(mailraven_delivery_attempts_total)")).data?.result[0]?.value[1] ?? 0) === 4, 30_000, "a scrape after the deliveries");
    const born = ["mailraven_smtp_connections_rejected_total", "mailraven_messages_rejected_total", "mailraven_messages_deferred_total", "mailraven_greylist_decisions_total", "mailraven_dnsbl_lookups_total"];
    for (const name of born) {
      await prometheus.waitFor(async () => Number((await prometheus.query(`min(count_over_time(${name}[1m]))`)).data?.result[0]?.value[1] ?? 0) >= 3, 30_000, `three samples of ${name}`);
    }
  }, 120_000);

  afterAll(async () => {
    await prometheus?.stop();
    if (relay) {
      await relay.stop();
      relay.cleanup();
    }
    await Promise.all([sink?.close(), dns?.stop()]);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 30_000);

  test("the dashboard is a Grafana dashboard covering what the issue lists, every panel with a query", () => {
    expect(dashboard.uid).toBe("mailraven-relay");
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "job", "instance"]);
    const titles = panels.map((p) => p.title);
    for (const t of ["Messages in and out", "Refusals by stage and reason (5xx)", "Queue depth", "Oldest queued message", "Delivery latency (acceptance to delivery)", "DNS list answers", "Greylisting decisions", "TLS share", "Memory (RSS)", "CPU"]) {
      expect(titles).toContain(t);
    }
    for (const p of panels) {
      expect({ title: p.title, queries: (p.targets ?? []).length > 0, datasource: p.datasource?.uid }).toEqual({ title: p.title, queries: true, datasource: "${datasource}" });
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  test("Prometheus evaluates every panel's query without error; panels on exported metrics have data", async () => {
    const results: { title: string; expr: string; status: string; error?: string; series: number }[] = [];
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const r = await prometheus.query(asGrafanaSends(t.expr));
        results.push({ title: p.title, expr: t.expr, status: r.status, error: r.error, series: r.data?.result.length ?? 0 });
      }
    }
    expect(results.filter((r) => r.status !== "success")).toEqual([]);
    // Every other query returns data (a rate of 0 is data): an empty answer means a wrong name,
    // label or operator. Metrics of other branches have no samples yet.
    const empty = results.filter((r) => r.series === 0 && ![...metricNames(r.expr)].some((m) => ADDED_ELSEWHERE.has(m)));
    expect(empty.map((r) => r.title).sort()).toEqual(EMPTY_HERE);
  }, 60_000);

  test("the numbers are the traffic's: TLS share in 2/3, out 3/3, greylisting and the DNS list counted, the certificate's expiry", async () => {
    const value = async (expr: string) => Number((await prometheus.query(asGrafanaSends(expr, "5m"))).data?.result[0]?.value[1]);
    // In: 2 of the 4 messages came over STARTTLS (the warm-up one did not); out: all 4 went over TLS.
    expect(await value("mailraven_messages_accepted_tls_total")).toBe(2);
    expect(await value("mailraven_messages_accepted_total")).toBe(4);
    expect(await value("mailraven_deliveries_tls_total")).toBe(4);
    const tls = panels.find((p) => p.title === "TLS share")!.targets!;
    // rate() extrapolates each series to the window's edges by its own values, so the in share
    // over the window is near 2/3 rather than exactly; out, both series are the same: exactly 1.
    const shareIn = await value(tls[0]!.expr);
    expect(shareIn).toBeGreaterThan(0.4);
    expect(shareIn).toBeLessThan(0.9);
    expect(await value(tls[1]!.expr)).toBeCloseTo(1, 5);
    expect(await value('sum(mailraven_greylist_decisions_total{decision="new"})')).toBe(1);
    expect(await value('sum(mailraven_greylist_decisions_total{decision="allowlisted"})')).toBe(4);
    expect(await value('sum(mailraven_dnsbl_lookups_total{zone="bl.mon.test", result="listed"})')).toBe(1);
    expect(await value('sum(mailraven_smtp_connections_rejected_total{reason="dnsbl bl.mon.test"})')).toBe(1);
    expect(await value('sum(mailraven_messages_deferred_total{stage="rcpt", reason="greylisted"})')).toBe(1);
    expect(await value('mailraven_tls_certificate_expiry_timestamp_seconds{listener="smtp", name="mx.mon.test"}')).toBe(certNotAfter);
    const daysLeft = await value(panels.find((p) => p.title === "Certificates: days left")!.targets![0]!.expr);
    expect(daysLeft).toBeGreaterThan(29);
    expect(daysLeft).toBeLessThanOrEqual(30);
  }, 30_000);

  test("the alert rules load and evaluate on the relay's series: every rule healthy, the never-backed-up relay pending on MailravenBackupTooOld", async () => {
    await prometheus.waitFor(async () => (await prometheus.rules()).every((r) => r.health !== "unknown"), 20_000, "every rule evaluated once");
    const rules = await prometheus.rules();
    expect(rules.filter((r) => r.health !== "ok").map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);
    expect(rules.map((r) => r.name)).toContain("MailravenBackupTooOld");
    // No backup yet: the gauge is 0, so the alert is on its way (pending for its 10 minutes).
    const alerts = (await (await fetch(`${prometheus.url}/api/v1/alerts`)).json()) as { data: { alerts: { labels: { alertname: string }; state: string }[] } };
    expect(alerts.data.alerts.filter((a) => a.labels.alertname === "MailravenBackupTooOld").map((a) => a.state)).toEqual(["pending"]);
    // A backup clears it at the next evaluation.
    expect((await relay.admin("POST", "/admin/backup")).status).toBe(200);
    await prometheus.waitFor(async () => {
      const now = (await (await fetch(`${prometheus.url}/api/v1/alerts`)).json()) as typeof alerts;
      return !now.data.alerts.some((a) => a.labels.alertname === "MailravenBackupTooOld");
    }, 20_000, "MailravenBackupTooOld cleared by a backup");
  }, 60_000);

  test("every metric the dashboard and the rules use is exported by the relay, or added by another branch (listed)", async () => {
    const exported = new Set((await (await relay.admin("GET", "/metrics")).text()).split("\n").filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2]!));
    const used = new Set([...panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)), readFileSync(RULES, "utf8")].flatMap((e) => [...metricNames(e)]));
    const unknown = [...used].filter((m) => !exported.has(m) && !ADDED_ELSEWHERE.has(m));
    expect(unknown).toEqual([]);
  });
});
