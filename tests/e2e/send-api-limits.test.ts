// The send API refuses what SMTP refuses: bare LF / bare CR in a raw message (400
// bare_newline, the smuggling defense) and messages over smtp.max_message_size (413), as
// JSON errors, with nothing queued and nothing relayed.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BINARY, queueCounts, Relay, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";

const LIMIT = 64 * 1024;
let sink: Sink;
let relay: Relay;
let port = 0;
let token = "";

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"] }, smtp: { max_message_size: "64KiB" }, api: { listen: "127.0.0.1:0" } } });
  port = Number(relay.logs.find((l) => l.msg === "send api listening")!.port);
  const add = await run([BINARY, "apikey", "add", "app", "--domain", "corp.test", "--json", "--config", relay.configPath]);
  expect(add.code).toBe(0);
  token = (JSON.parse(add.out) as { token: string }).token;
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await sink?.close();
}, 60_000);

const raw = (message: string | Uint8Array) =>
  fetch(`http://127.0.0.1:${port}/api/v1/messages?from=ops@corp.test&to=bob@dest.test`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "message/rfc822" },
    body: message,
  });
const json = (body: unknown) =>
  fetch(`http://127.0.0.1:${port}/api/v1/messages`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) });

async function refused(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toContain("application/json");
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message).not.toMatch(/\/work|\/tmp|at .*\.ts:\d+/); // no paths, no stack
  expect(queueCounts(relay.dir).messages).toBe(0);
}

describe("raw messages with bare line endings", () => {
  const cases: Record<string, string> = {
    "bare LF in the body (end-of-data look-alike)": "From: ops@corp.test\r\nSubject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<ceo@corp.test>\r\n",
    "bare CR in the body": "From: ops@corp.test\r\nSubject: cr\r\n\r\nhel\rlo\r\n",
    "bare LF in a header": "From: ops@corp.test\nSubject: lf\r\n\r\nbody\r\n",
  };
  for (const [name, message] of Object.entries(cases)) {
    test(`${name}: 400 bare_newline, nothing queued`, async () => {
      await refused(await raw(message), 400, "bare_newline");
    }, 30_000);
  }
});

describe("size: smtp.max_message_size applies to the API", () => {
  const line = `${"x".repeat(76)}\r\n`;
  const sized = (bytes: number) => `From: ops@corp.test\r\nSubject: big\r\n\r\n${line.repeat(Math.ceil(bytes / line.length))}`;

  test("a raw message over the limit: 413 too_large", async () => {
    await refused(await raw(sized(LIMIT + 1024)), 413, "too_large");
  }, 30_000);

  test("a JSON text field over the limit: 413 too_large", async () => {
    await refused(await json({ from: "ops@corp.test", to: ["bob@dest.test"], subject: "big", text: "y".repeat(LIMIT + 1024) }), 413, "too_large");
  }, 30_000);

  test("JSON fields each under the limit that make a message over it: 413 too_large", async () => {
    const half = "w ".repeat(LIMIT / 4 + 512); // text and html, each a bit over half the limit
    await refused(await json({ from: "ops@corp.test", to: ["bob@dest.test"], subject: "big", text: half, html: `<p>${half}</p>` }), 413, "too_large");
  }, 30_000);

  test("a request far over the limit: 413, nothing queued", async () => {
    const res = await raw(sized(LIMIT * 4));
    expect(res.status).toBe(413);
    expect(queueCounts(relay.dir).messages).toBe(0);
  }, 30_000);

  test("just under the limit is accepted (202)", async () => {
    const res = await raw(sized(LIMIT - 2048));
    expect(res.status).toBe(202);
  }, 30_000);
});

test("nothing refused reached the next hop: only the accepted message arrives", async () => {
  await waitFor(() => sink.messages.length >= 1, 10_000, "the accepted message");
  await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "an empty queue");
  expect(sink.messages).toHaveLength(1);
  expect(sink.messages[0]!.raw.toString("latin1")).not.toMatch(/smuggle|Subject: cr|Subject: lf/);
}, 30_000);
