import { describe, expect, test } from "bun:test";
import { buildBounce, type BounceInput } from "../../src/queue/dsn.ts";
import { isQueueId, QueueIdGenerator } from "../../src/queue/id.ts";

const ids = new QueueIdGenerator();

const NOW = Date.UTC(2024, 2, 5, 12, 0, 0);
const ORIGINAL_HEADERS =
  "Received: from client.example.org (client.example.org [192.0.2.10])\r\n\tby mx.example.net (mailraven) with ESMTP id 01HQZ3Y8K2M4N6P8;\r\n\tTue, 5 Mar 2024 07:08:09 +0000\r\n" +
  "From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: quarterly numbers\r\nMessage-ID: <m1@example.org>\r\n";

function input(over: Partial<BounceInput> = {}): BounceInput {
  return {
    reportingHost: "mx.example.net",
    originalId: "01HQZ3Y8K2M4N6P8",
    originalSender: "alice@example.org",
    originalReceivedAt: Date.UTC(2024, 2, 5, 7, 8, 9),
    originalHeaders: ORIGINAL_HEADERS,
    failed: [{ address: "bob@remote.example", diagnostic: "550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown", remote: true }],
    route: "smtp://10.0.0.5",
    now: NOW,
    id: ids.next(NOW),
    ...over,
  };
}

interface Part {
  headers: string;
  body: string;
}

/** Splits a message into its header block and body at the first empty line. */
function split(text: string): Part {
  const i = text.indexOf("\r\n\r\n");
  expect(i).toBeGreaterThan(0);
  return { headers: text.slice(0, i + 2), body: text.slice(i + 4) };
}

function header(headers: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:[ \\t]*(.*(?:\\r\\n[ \\t].*)*)\\r\\n`, "im").exec(headers);
  return m?.[1]?.replace(/\r\n[ \t]+/g, " ");
}

/** Parses the bounce into its top-level headers and MIME parts, checking the multipart framing. */
function parse(text: string): { top: Part; parts: Part[]; boundary: string } {
  const top = split(text);
  const ct = header(top.headers, "Content-Type");
  const boundary = /boundary="([^"]+)"/.exec(ct ?? "")?.[1];
  if (!boundary) throw new Error(`no boundary in ${ct}`);
  const close = `\r\n--${boundary}--\r\n`;
  expect(top.body.endsWith(close)).toBe(true);
  const sections = top.body.slice(0, -close.length).split(`\r\n--${boundary}\r\n`);
  // Anything before the first delimiter is preamble.
  const parts = sections.slice(1).map(split);
  return { top, parts, boundary };
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
/** The whole bounce as it will be sent: header section, then body. */
const whole = (m: { head: Uint8Array; inlineBody: Uint8Array | null }): string => decode(m.head) + decode(m.inlineBody!);

describe("buildBounce", () => {
  const msg = buildBounce(input());
  const text = whole(msg);

  test("comes from the null sender and goes to the original sender over the given route", () => {
    expect(msg.sender).toBe("");
    expect(msg.recipients).toEqual([{ address: "alice@example.org", route: "smtp://10.0.0.5" }]);
    expect(msg.receivedAt).toBe(NOW);
    expect(isQueueId(msg.id)).toBe(true);
    expect(msg.size).toBe(msg.head.length + msg.inlineBody!.length);
  });

  test("every line ends in CRLF", () => {
    expect(text.endsWith("\r\n")).toBe(true);
    expect(text.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
  });

  test("is pure ASCII with lines within the RFC 5322 limit", () => {
    expect(text).toMatch(/^[\x00-\x7f]*$/);
    for (const l of text.split("\r\n")) expect(l.length).toBeLessThanOrEqual(998);
  });

  test("top-level headers: multipart/report; report-type=delivery-status, auto-submitted, to the sender", () => {
    const { top } = parse(text);
    expect(header(top.headers, "Content-Type")).toMatch(/^multipart\/report; report-type=delivery-status; boundary="[^"]+"$/);
    expect(header(top.headers, "MIME-Version")).toBe("1.0");
    expect(header(top.headers, "To")).toBe("<alice@example.org>");
    expect(header(top.headers, "From")).toBe("Mail Delivery System <MAILER-DAEMON@mx.example.net>");
    expect(header(top.headers, "Auto-Submitted")).toBe("auto-replied");
    expect(header(top.headers, "Date")).toBe("Tue, 5 Mar 2024 12:00:00 +0000");
    expect(header(top.headers, "Message-ID")).toBe(`<${msg.id}@mx.example.net>`);
    expect(header(top.headers, "Subject")).toBeDefined();
  });

  test("three parts: text/plain, message/delivery-status, text/rfc822-headers", () => {
    const { parts, boundary } = parse(text);
    expect(parts.map((p) => header(p.headers, "Content-Type")?.split(";")[0])).toEqual(["text/plain", "message/delivery-status", "text/rfc822-headers"]);
    // The boundary must not occur inside any part.
    for (const p of parts) expect(p.body).not.toContain(`--${boundary}`);
  });

  test("the human-readable part names the failed recipient and the reason", () => {
    const human = parse(text).parts[0]!.body;
    expect(human).toContain("<bob@remote.example>: 550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown");
    expect(human).toContain("01HQZ3Y8K2M4N6P8");
  });

  test("delivery-status: per-message fields, then Final-Recipient / Action: failed / Status / Diagnostic-Code", () => {
    const ds = parse(text).parts[1]!.body;
    const [perMessage, ...perRecipient] = ds.replace(/(\r\n)+$/, "").split("\r\n\r\n");
    expect(header(perMessage! + "\r\n", "Reporting-MTA")).toBe("dns; mx.example.net");
    expect(header(perMessage! + "\r\n", "Arrival-Date")).toBe("Tue, 5 Mar 2024 07:08:09 +0000");
    expect(perRecipient).toHaveLength(1);
    const r = perRecipient[0]! + "\r\n";
    expect(header(r, "Final-Recipient")).toBe("rfc822; bob@remote.example");
    expect(header(r, "Action")).toBe("failed");
    expect(header(r, "Status")).toBe("5.1.1");
    expect(header(r, "Diagnostic-Code")).toBe("smtp; 550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown");
    expect(header(r, "Last-Attempt-Date")).toBe("Tue, 5 Mar 2024 12:00:00 +0000");
  });

  test("text/rfc822-headers carries the original headers and not the body", () => {
    const withBody = buildBounce(input({ originalHeaders: ORIGINAL_HEADERS + "\r\n" }));
    for (const m of [msg, withBody]) {
      const part = parse(whole(m)).parts[2]!;
      // The CRLF before the closing delimiter belongs to the delimiter (RFC 2046 5.1.1).
      expect(part.body).toBe(ORIGINAL_HEADERS);
    }
    expect(text).not.toContain("quarterly numbers body text");
  });

  test("original headers with bare LF line ends are converted to CRLF", () => {
    const m = buildBounce(input({ originalHeaders: "From: a@example.org\nSubject: x\n" }));
    const t = whole(m);
    expect(t.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
    expect(parse(t).parts[2]!.body).toBe("From: a@example.org\r\nSubject: x\r\n");
  });
});

describe("Status derived from the diagnostic", () => {
  function statusOf(diagnostic: string, remote = true): string | undefined {
    const ds = parse(whole(buildBounce(input({ failed: [{ address: "bob@remote.example", diagnostic, remote }] })))).parts[1]!.body;
    return /^Status: (.*)$/m.exec(ds)?.[1];
  }

  test("the enhanced code of a permanent reply is kept", () => {
    expect(statusOf("550 5.1.1 User unknown")).toBe("5.1.1");
    expect(statusOf("552-5.2.2 Mailbox full\n552 5.2.2 try later")).toBe("5.2.2");
    expect(statusOf("554 5.7.1 Relaying denied")).toBe("5.7.1");
  });

  test("a temporary code that was given up on becomes permanent (4.x.x -> 5.x.x)", () => {
    expect(statusOf("421 4.4.2 Connection timed out (gave up after 9 attempts)")).toBe("5.4.2");
    expect(statusOf("4.4.1 Connection to smtp://10.0.0.5 failed: ECONNREFUSED (gave up after 9 attempts)", false)).toBe("5.4.1");
    expect(statusOf("5.4.4 No route to the recipient's domain", false)).toBe("5.4.4");
  });

  test("without an enhanced code it is 5.0.0", () => {
    expect(statusOf("550 User unknown")).toBe("5.0.0");
  });

  test("an IP address or version number in the text is not mistaken for a status code", () => {
    expect(statusOf("550 Mailbox unavailable on host 10.2.3.4")).toBe("5.0.0");
    expect(statusOf("554 rejected by filter 4.12.1, see https://example.net")).toBe("5.0.0");
  });

  test("local failures use the x-mailraven diagnostic type", () => {
    const ds = parse(whole(buildBounce(input({ failed: [{ address: "b@x.example", diagnostic: "5.4.4 No route", remote: false }] })))).parts[1]!.body;
    expect(ds).toContain("Diagnostic-Code: x-mailraven; 5.4.4 No route\r\n");
  });
});

describe("several failed recipients", () => {
  const msg = buildBounce(
    input({
      failed: [
        { address: "bob@remote.example", diagnostic: "550 5.1.1 unknown", remote: true },
        { address: "carol@remote.example", diagnostic: "452 4.2.2 mailbox full\r\n(gave up after 9 attempts)", remote: true },
      ],
    }),
  );
  const text = whole(msg);

  test("one per-recipient block each, in order", () => {
    const ds = parse(text).parts[1]!.body;
    const blocks = ds.replace(/(\r\n)+$/, "").split("\r\n\r\n").slice(1);
    expect(blocks.map((b) => header(b + "\r\n", "Final-Recipient"))).toEqual(["rfc822; bob@remote.example", "rfc822; carol@remote.example"]);
    expect(blocks.map((b) => header(b + "\r\n", "Status"))).toEqual(["5.1.1", "5.2.2"]);
    expect(blocks.every((b) => header(b + "\r\n", "Action") === "failed")).toBe(true);
  });

  test("a multi-line diagnostic is put on one line", () => {
    expect(text).toContain("Diagnostic-Code: smtp; 452 4.2.2 mailbox full (gave up after 9 attempts)\r\n");
    expect(text.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
  });

  test("still one bounce to the sender", () => {
    expect(msg.recipients).toEqual([{ address: "alice@example.org", route: "smtp://10.0.0.5" }]);
  });
});
