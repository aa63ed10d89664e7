// SMTP smuggling through authenticated submission (587 after STARTTLS, 465 with TLS): an
// authenticated user's mail is relayed to any domain, so a smuggled second message would be
// sent on with our name on it. Bare LF / bare CR refuse the whole message here too.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CANARY_SENDER, canaryThrough } from "../helpers/canary.ts";
import { BINARY, queueCounts, Relay, tempDir } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const PASSWORD = "correct horse battery staple";
let sink: Sink;
let relay: Relay;
const ports = { submission: 0, smtps: 0 };

beforeAll(async () => {
  const certDir = tempDir("mailraven-cert-");
  const key = join(certDir, "mail.test.key");
  const cert = join(certDir, "mail.test.pem");
  const gen = await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=mail.test", "-addext", "subjectAltName=DNS:mail.test"]);
  expect(gen.code).toBe(0);
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"], smarthost: sink.route },
      submission: { starttls: ["127.0.0.1:0"], tls: ["127.0.0.1:0"], certificates: [{ cert_file: cert, key_file: key }] },
    },
  });
  for (const mode of ["submission", "smtps"] as const) ports[mode] = Number(relay.logs.find((l) => l.msg === "smtp listening" && l.mode === mode)!.port);
  const add = await run([BINARY, "user", "add", "alice", "--identity", "alice@corp.test", "--identity", "canary@origin.test", "--password-stdin", "--config", relay.configPath], `${PASSWORD}\n`);
  expect(add.code).toBe(0);
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await sink?.close();
}, 60_000);

/** An authenticated session on 587 (STARTTLS first) or 465. */
async function authenticated(mode: "submission" | "smtps"): Promise<SmtpTalk> {
  const { talk, greeting } = mode === "smtps" ? await SmtpTalk.openTls(ports.smtps, { servername: "mail.test" }) : await SmtpTalk.open(ports.submission);
  expect(greeting.code).toBe(220);
  await talk.send("EHLO client.test");
  if (mode === "submission") {
    expect((await talk.startTls("mail.test")).code).toBe(220);
    await talk.send("EHLO client.test");
  }
  const auth = await talk.send(`AUTH PLAIN ${btoa(`\0alice\0${PASSWORD}`)}`);
  expect(auth.code).toBe(235);
  return talk;
}

const smuggled = "MAIL FROM:<alice@corp.test>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\nFrom: alice@corp.test\r\nSubject: smuggled\r\n\r\npay now\r\n";
const cover = "From: alice@corp.test\r\nSubject: cover\r\n\r\nhello";
const variants: Record<string, string> = {
  "<LF>.<LF>": `${cover}\n.\n${smuggled}`,
  "<LF>.<CR><LF>": `${cover}\n.\r\n${smuggled}`,
  "<CR><LF>.<LF>": `${cover}\r\n.\n${smuggled}`,
  "<CR>.<CR>": `${cover}\r.\r${smuggled}`,
  "bare LF in a header": "From: alice@corp.test\nX-Evil: 1\r\n\r\nbody\r\n",
};

for (const mode of ["submission", "smtps"] as const) {
  describe(`${mode === "submission" ? "587 after STARTTLS" : "465"}, authenticated`, () => {
    for (const [name, body] of Object.entries(variants)) {
      test(`${name}: 550 5.5.2, nothing queued, the session stays in sync`, async () => {
        const talk = await authenticated(mode);
        const r = await talk.transaction("alice@corp.test", ["bob@elsewhere.test"], body);
        expect(r.code).toBe(550);
        expect(r.text).toStartWith("5.5.2 ");
        expect((await talk.send("NOOP")).code).toBe(250);
        talk.close();
        expect(queueCounts(relay.dir).messages).toBe(0);
      });
    }
  });
}

test("nothing was relayed: a canary sent after the attempts arrives alone, and the queue is empty", async () => {
  await canaryThrough(relay, sink, undefined, async () => {
    const talk = await authenticated("smtps");
    const r = await talk.transaction(CANARY_SENDER, ["bob@elsewhere.test"], `From: ${CANARY_SENDER}\r\nSubject: canary\r\n\r\nafter the attempts\r\n`);
    talk.close();
    return r.code;
  });
  expect(sink.messages).toHaveLength(1);
  expect(sink.messages[0]!.to).toEqual(["bob@elsewhere.test"]);
});
