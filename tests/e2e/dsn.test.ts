// Delivery status notifications as RFC 3461 asks for them: NOTIFY=NEVER silences the bounce,
// NOTIFY=SUCCESS gets a "relayed" report from a next hop without DSN and a "delivered" one
// from LMTP, DELAY gets one warning after queue.delay_warning, RET=HDRS/FULL decides what is
// returned, and ENVID / ORCPT come back in the report fields. Reports are parsed, not grepped.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { transact } from "../helpers/esmtp.ts";
import { queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";

let plain: Sink;
let lmtp: Sink;
let origin: Sink;
let relay: Relay;

const refuse = (address: string) =>
  address.startsWith("reject") ? { code: 550, message: "5.1.1 No such user" } : address.startsWith("slow") ? { code: 451, message: "4.2.0 Try again later" } : undefined;

beforeAll(async () => {
  plain = await Sink.start({ hide: ["DSN"], rcpt: refuse });
  lmtp = await Sink.start({ hide: ["DSN"], lmtp: () => undefined });
  origin = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "plain.test": plain.route, "lmtp.test": lmtp.route, "origin.test": origin.route } },
      queue: { retry_schedule: ["1s", "1s", "1s"], delay_warning: "1s" },
    },
  });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await Promise.all([plain.close(), lmtp.close(), origin.close()]);
});

interface Report {
  readonly subject: string;
  readonly perMessage: Record<string, string>;
  readonly perRecipient: Record<string, string>[];
  readonly returned: { contentType: string; content: string };
}

/** Parses a multipart/report (RFC 6522) with its message/delivery-status (RFC 3464). */
function parseReport(raw: Buffer): Report {
  const text = raw.toString("latin1");
  const head = text.slice(0, text.indexOf("\r\n\r\n"));
  expect(head).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status; boundary="[^"]+"$/m);
  const boundary = /boundary="([^"]+)"/.exec(head)![1]!;
  const parts = text.split(`\r\n--${boundary}`).slice(1, -1).map((p) => ({ head: p.slice(2, p.indexOf("\r\n\r\n")), body: p.slice(p.indexOf("\r\n\r\n") + 4) }));
  expect(parts.map((p) => p.head.split(";")[0])).toEqual(["Content-Type: text/plain", "Content-Type: message/delivery-status", expect.stringMatching(/^Content-Type: (text\/rfc822-headers|message\/rfc822)$/)]);
  const fields = (block: string) => Object.fromEntries(block.split("\r\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
  const [perMessage, ...perRecipient] = parts[1]!.body.replace(/(\r\n)+$/, "").split("\r\n\r\n").map(fields);
  return { subject: /^Subject: (.*)$/m.exec(head)![1]!, perMessage: perMessage!, perRecipient, returned: { contentType: parts[2]!.head.slice("Content-Type: ".length), content: parts[2]!.body } };
}

const reports = (marker: string) => origin.messages.filter((m) => m.from === "" && m.raw.toString("latin1").includes(marker));
const reportAbout = (marker: string, action: string) =>
  waitFor(() => reports(marker).find((m) => m.raw.toString("latin1").includes(`Action: ${action}`)), 15_000, `the "${action}" report about ${marker}`);
const message = (marker: string, body = "the body text") => Buffer.from(`From: alice@origin.test\r\nSubject: ${marker}\r\nMessage-ID: <${marker}@origin.test>\r\n\r\n${body}\r\n`);

describe("NOTIFY", () => {
  test("NEVER: a refused recipient is not bounced (a recipient without NOTIFY in the same message is)", async () => {
    const before = relay.count("bounce queued");
    await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test>", rcpts: ["RCPT TO:<reject-never@plain.test> NOTIFY=NEVER", "RCPT TO:<reject-default@plain.test>"], message: message("notify-never") });
    const bounce = parseReport((await reportAbout("notify-never", "failed")).raw);
    expect(bounce.perRecipient.map((r) => r["Final-Recipient"])).toEqual(["rfc822; reject-default@plain.test"]);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(relay.count("bounce queued")).toBe(before + 1);
    expect(relay.logs.filter((l) => l.msg === "recipient failed" && String(l.rcpt).startsWith("reject-")).map((l) => [l.rcpt, l.notify])).toContainEqual(["reject-never@plain.test", "NEVER"]);
  });

  test("SUCCESS to a next hop without DSN: a relayed report with ENVID, ORCPT and the hop's reply", async () => {
    await transact(relay.port, {
      mail: "MAIL FROM:<alice@origin.test> ENVID=env+2B42",
      rcpts: ["RCPT TO:<bob@plain.test> NOTIFY=SUCCESS ORCPT=rfc822;Bob+2Bx@origin.test", "RCPT TO:<carol@plain.test>"],
      message: message("notify-success"),
    });
    const r = parseReport((await reportAbout("notify-success", "relayed")).raw);
    expect(r.subject).toBe("Successful Mail Delivery Report");
    expect(r.perMessage["Original-Envelope-Id"]).toBe("env+42");
    expect(r.perMessage["Reporting-MTA"]).toBe("dns; relay.test");
    expect(r.perRecipient).toHaveLength(1);
    expect(r.perRecipient[0]).toMatchObject({
      "Original-Recipient": "rfc822; Bob+x@origin.test",
      "Final-Recipient": "rfc822; bob@plain.test",
      Action: "relayed",
      Status: "2.0.0",
      "Remote-MTA": "dns; 127.0.0.1",
    });
    expect(r.perRecipient[0]!["Diagnostic-Code"]).toStartWith("smtp; 250");
    // Success and delay reports return headers only.
    expect(r.returned.contentType).toBe("text/rfc822-headers");
    expect(r.returned.content).toContain("Message-ID: <notify-success@origin.test>");
    expect(r.returned.content).not.toContain("the body text");
  });

  test("SUCCESS to LMTP: a delivered report", async () => {
    await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test>", rcpts: ["RCPT TO:<dora@lmtp.test> NOTIFY=SUCCESS,FAILURE"], message: message("notify-lmtp") });
    const r = parseReport((await reportAbout("notify-lmtp", "delivered")).raw);
    expect(r.perRecipient.map((x) => [x["Final-Recipient"], x.Action, x.Status])).toEqual([["rfc822; dora@lmtp.test", "delivered", "2.0.0"]]);
  });

  test("no NOTIFY: a delivered recipient gets no report", async () => {
    await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test>", rcpts: ["RCPT TO:<erin@lmtp.test>"], message: message("notify-none") });
    await waitFor(() => lmtp.messages.some((m) => m.raw.toString("latin1").includes("notify-none")), 10_000, "delivery");
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    expect(reports("notify-none")).toEqual([]);
  });
});

describe("RET", () => {
  test("RET=FULL returns the whole message as message/rfc822; RET=HDRS only its header section", async () => {
    await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test> RET=FULL", rcpts: ["RCPT TO:<reject-full@plain.test>"], message: message("ret-full", "the full body comes back") });
    await transact(relay.port, { mail: "MAIL FROM:<alice@origin.test> RET=HDRS", rcpts: ["RCPT TO:<reject-hdrs@plain.test>"], message: message("ret-hdrs", "this body stays here") });
    const full = parseReport((await reportAbout("ret-full", "failed")).raw);
    expect(full.returned.contentType).toBe("message/rfc822");
    expect(full.returned.content).toContain("Subject: ret-full\r\n");
    expect(full.returned.content).toEndWith("\r\n\r\nthe full body comes back\r\n");
    const hdrs = parseReport((await reportAbout("ret-hdrs", "failed")).raw);
    expect(hdrs.returned.contentType).toBe("text/rfc822-headers");
    expect(hdrs.returned.content).toContain("Subject: ret-hdrs\r\n");
    expect(hdrs.returned.content).not.toContain("this body stays here");
  });
});

describe("delay warnings", () => {
  test("one warning per recipient after queue.delay_warning, then the bounce; NOTIFY without DELAY gets no warning", async () => {
    await transact(relay.port, {
      mail: "MAIL FROM:<alice@origin.test>",
      rcpts: ["RCPT TO:<slow-warned@plain.test>", "RCPT TO:<slow-quiet@plain.test> NOTIFY=FAILURE"],
      message: message("delay-warning"),
    });
    const warning = parseReport((await reportAbout("delay-warning", "delayed")).raw);
    expect(warning.subject).toBe("Delayed Mail (still being retried)");
    expect(warning.perRecipient).toHaveLength(1);
    expect(warning.perRecipient[0]).toMatchObject({ "Final-Recipient": "rfc822; slow-warned@plain.test", Action: "delayed", Status: "4.2.0" });
    expect(warning.perRecipient[0]!["Diagnostic-Code"]).toBe("smtp; 451 4.2.0 Try again later");
    expect(warning.perRecipient[0]!["Will-Retry-Until"]).toMatch(/^\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/);
    const bounce = parseReport((await reportAbout("delay-warning", "failed")).raw);
    expect(bounce.perRecipient.map((r) => [r["Final-Recipient"], r.Status])).toEqual([
      ["rfc822; slow-warned@plain.test", "5.2.0"],
      ["rfc822; slow-quiet@plain.test", "5.2.0"],
    ]);
    await waitFor(() => queueCounts(relay.dir).messages === 0, 5000, "an empty queue");
    // Four attempts, three of them after the warning time: still one warning.
    expect(relay.logs.filter((l) => l.msg === "delivery attempt" && l.deferred === 2).length).toBeGreaterThanOrEqual(3);
    expect(reports("delay-warning").filter((m) => m.raw.toString("latin1").includes("Action: delayed"))).toHaveLength(1);
  }, 30_000);
});
