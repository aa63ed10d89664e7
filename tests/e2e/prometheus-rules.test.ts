// The alert rules an operator loads into Prometheus (contrib/prometheus/mailraven-rules.yml):
// valid for Prometheus's own checker, each alert shown firing (and quiet short of its threshold)
// by `promtool test rules`, and each one pointing at a runbook that exists.

import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { run } from "../helpers/run.ts";

const ROOT = resolve(import.meta.dir, "../..");
const RULES = join(ROOT, "contrib/prometheus/mailraven-rules.yml");
const RULE_TESTS = join(ROOT, "contrib/prometheus/mailraven-rules.test.yml");
const PROMTOOL = Bun.which("promtool");

interface Rule {
  alert?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (Bun.YAML.parse(readFileSync(RULES, "utf8")) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

describe("alert rules", () => {
  if (!PROMTOOL) {
    // scripts/test.sh installs Debian's "prometheus" package, which has promtool.
    test.skip("promtool is not installed (apt-get install prometheus): rules not checked", () => {});
  } else {
    test("promtool check rules: valid", async () => {
      const r = await run([PROMTOOL, "check", "rules", RULES]);
      expect(r.text).toContain(`SUCCESS: ${rules.length} rules found`);
      expect(r.code).toBe(0);
    }, 30_000);

    test("promtool test rules: every unit test passes", async () => {
      const r = await run([PROMTOOL, "test", "rules", RULE_TESTS]);
      expect(r.text).not.toContain("FAILED");
      expect(r.text).toContain("SUCCESS");
      expect(r.code).toBe(0);
    }, 120_000);
  }

  test("every alert is tested firing and quiet, has a severity, and names a runbook that exists", () => {
    const tests = (Bun.YAML.parse(readFileSync(RULE_TESTS, "utf8")) as { tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[] }).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const a of alerts) {
      const cases = tests.filter((t) => t.alertname === a.alert);
      expect({ alert: a.alert, fires: cases.some((c) => c.exp_alerts.length > 0) }).toEqual({ alert: a.alert, fires: true });
      expect({ alert: a.alert, severity: ["warning", "critical"].includes(a.labels?.severity ?? "") }).toEqual({ alert: a.alert, severity: true });
      const runbook = a.annotations?.runbook ?? "";
      expect({ alert: a.alert, runbook, exists: existsSync(join(ROOT, runbook)) }).toEqual({ alert: a.alert, runbook, exists: true });
    }
    // Each quiet case: at least half the alerts are also shown not firing at some point.
    const quiet = new Set(tests.filter((t) => t.exp_alerts.length === 0).map((t) => t.alertname));
    expect(quiet.size).toBeGreaterThanOrEqual(Math.ceil(alerts.length / 2));
    // The list: relay down, queue growing or old, delivery failures, deferred spike, a
    // check failing open, disk reserve, certificate expiry, backup older than 26 h, Redis.
    expect(alerts.map((a) => a.alert).sort()).toEqual([
      "MailravenBackupTooOld", "MailravenCertificateExpiring", "MailravenCertificateExpiringSoon", "MailravenCheckFailingOpen", "MailravenDeferredSpike",
      "MailravenDeliveryFailureRatio", "MailravenDiskBelowReserve", "MailravenDiskReserveLow", "MailravenDnsListErrors", "MailravenDown",
      "MailravenOldestMessageOld", "MailravenQueueGrowing", "MailravenRedisDegraded",
    ]);
    expect(alerts.find((a) => a.alert === "MailravenBackupTooOld")!.expr).toContain("26 * 3600");
  });
});
