// Authenticated submission: 587 with STARTTLS and 465 with TLS, AUTH only over TLS, users with
// argon2id passwords, sender identities, per-user limits and the brute-force blocklist.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { BINARY, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";
import { run as exec } from "../helpers/run.ts";

const PASSWORD = "correct horse battery staple";
let sink: Sink;
let relay: Relay;
let port587 = 0;
let port465 = 0;
let certDir: string;

const run = async (cmd: string[], stdin = "") => {
  const r = await exec(cmd, stdin);
  return { code: r.code, out: r.text };
};

async function makeCert(name: string): Promise<{ cert_file: string; key_file: string }> {
  const key = join(certDir, `${name}.key`);
  const cert = join(certDir, `${name}.pem`);
  const r = await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`]);
  expect(r.code).toBe(0);
  return { cert_file: cert, key_file: key };
}

/** swaks against the submission port; returns its exit code and transcript. */
const swaks = (...args: string[]) => run(["swaks", "--server", `127.0.0.1:${port587}`, "--tls", "--to", "bob@dest.test", "--body", "hello", ...args]);

beforeAll(async () => {
  certDir = tempDir("mailraven-cert-");
  const main = await makeCert("mail.test");
  const other = await makeCert("other.test");
  sink = await Sink.start();
  relay = await Relay.start({
    config: {
      relay: { domains: { "dest.test": sink.route }, relay_networks: ["10.99.99.0/24"], smarthost: sink.route },
      submission: {
        starttls: ["127.0.0.1:0"],
        tls: ["127.0.0.1:0"],
        certificates: [main, other],
        rate_limit: "5/1h",
        auth_failures: { max: 3, window: "1m", block_for: "1h" },
      },
    },
  });
  const ports = relay.logs.filter((l) => l.msg === "smtp listening");
  port587 = Number(ports.find((l) => l.mode === "submission")!.port);
  port465 = Number(ports.find((l) => l.mode === "smtps")!.port);
  const add = await run([BINARY, "user", "add", "alice", "--identity", "alice@corp.test", "--identity", "@sales.corp.test", "--password-stdin", "--config", relay.configPath], `${PASSWORD}\n`);
  expect(add.out).toContain("user alice added");
  expect(add.code).toBe(0);
}, 60_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
  await sink.close();
}, 60_000);

describe("587 with STARTTLS", () => {
  test("AUTH is neither offered nor accepted before STARTTLS, and MAIL needs both", async () => {
    const plain = await run(["swaks", "--server", `127.0.0.1:${port587}`, "--to", "bob@dest.test", "--quit-after", "MAIL", "--from", "alice@corp.test"]);
    expect(plain.out).not.toMatch(/250[- ]AUTH/);
    expect(plain.out).toContain("530 5.7.0 Must issue a STARTTLS command first");
    // A client that tries anyway, in clear text: refused, and the password goes nowhere.
    const { talk } = await SmtpTalk.open(port587);
    await talk.send("EHLO eager.test");
    const auth = await talk.send(`AUTH PLAIN ${btoa(`\0alice\0${PASSWORD}`)}`);
    expect(auth.code).toBe(530);
    expect(auth.text).toBe("5.7.0 Must issue a STARTTLS command first");
    talk.close();
    const noAuth = await swaks("--from", "alice@corp.test", "--quit-after", "MAIL");
    expect(noAuth.out).toMatch(/250[- ]AUTH PLAIN LOGIN/);
    expect(noAuth.out).toContain("530 5.7.0 Authentication required");
  });

  test("AUTH PLAIN and LOGIN over STARTTLS: accepted, relayed to any domain, delivered", async () => {
    for (const method of ["PLAIN", "LOGIN"]) {
      const r = await swaks("--auth", method, "--auth-user", "alice", "--auth-password", PASSWORD, "--from", "alice@corp.test", "--to", `carol-${method}@elsewhere.test`, "--header", `Subject: via ${method}`, "--h-From", "alice@corp.test");
      expect(r.out).toContain("235 2.7.0");
      expect(r.out).toMatch(/250 2\.0\.0 Ok: queued as/);
      expect(r.code).toBe(0);
    }
    await waitFor(() => sink.messages.filter((m) => m.from === "alice@corp.test").length >= 2, 10_000, "delivery");
    expect(relay.logs.some((l) => l.msg === "authenticated" && l.user === "alice")).toBe(true);
    expect(JSON.stringify(relay.logs)).not.toContain(PASSWORD);
  });

  test("a wrong password and an unknown user get the same 535 5.7.8", async () => {
    const wrong = await swaks("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "not the password", "--local-interface", "127.0.0.60", "--quit-after", "AUTH");
    const unknown = await swaks("--auth", "PLAIN", "--auth-user", "mallory", "--auth-password", PASSWORD, "--local-interface", "127.0.0.61", "--quit-after", "AUTH");
    for (const r of [wrong, unknown]) expect(r.out).toContain("535 5.7.8 Authentication credentials invalid");
  });

  test("sending as someone else is refused: envelope at MAIL, From: header after DATA (553 5.7.1)", async () => {
    const auth = ["--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD];
    const envelope = await swaks(...auth, "--from", "ceo@corp.test", "--quit-after", "MAIL");
    expect(envelope.out).toContain("553 5.7.1 Sender address <ceo@corp.test> is not one of the identities of user alice");
    const header = await swaks(...auth, "--from", "alice@corp.test", "--h-From", '"The CEO" <ceo@corp.test>');
    expect(header.out).toContain("553 5.7.1 Sender address <ceo@corp.test>");
    const domain = await swaks(...auth, "--from", "team@sales.corp.test", "--h-From", "team@sales.corp.test");
    expect(domain.out).toMatch(/250 2\.0\.0 Ok: queued as/);
  });

  test("failed logins from one IP put it on the blocklist", async () => {
    const from = ["--local-interface", "127.0.0.70", "--quit-after", "AUTH"];
    for (let i = 0; i < 2; i++) expect((await swaks("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", `guess ${i}`, ...from)).out).toContain("535 5.7.8");
    expect((await swaks("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "guess 3", ...from)).out).toContain("421 4.7.0 Too many failed authentications");
    const next = await swaks("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD, ...from);
    expect(next.out).toContain("554 5.7.1 Service unavailable; client [127.0.0.70] is blocked");
    const blocked = (await (await relay.admin("GET", "/admin/blocklist")).json()) as { entries: { cidr: string; reason: string; expires_at: string }[] };
    expect(blocked.entries).toContainEqual(expect.objectContaining({ cidr: "127.0.0.70/32", reason: "too many authentication failures" }));
  });
});

describe("465 with TLS from the first byte", () => {
  test("nodemailer submits with AUTH and the message is delivered", async () => {
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: port465, secure: true, auth: { user: "alice", pass: PASSWORD }, tls: { rejectUnauthorized: false, servername: "mail.test" } });
    const info = await transport.sendMail({ from: "alice@corp.test", to: "dave@elsewhere.test", subject: "over 465", text: "hi" });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as/);
    await waitFor(() => sink.messages.some((m) => m.to.includes("dave@elsewhere.test")), 10_000, "delivery");
  });

  test("SNI picks the certificate; TLS 1.1 is refused", async () => {
    for (const name of ["mail.test", "other.test"]) {
      const r = await run(["openssl", "s_client", "-connect", `127.0.0.1:${port465}`, "-servername", name]);
      expect(r.out).toMatch(new RegExp(`subject=\\s*CN\\s*=\\s*${name.replace(".", "\\.")}`));
    }
    const old = await run(["openssl", "s_client", "-connect", `127.0.0.1:${port465}`, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    expect(old.out).toMatch(/alert protocol version|no protocols available|Cipher is \(NONE\)/);
  });

  test("the per-user limit: past it MAIL gets 450 4.7.1", async () => {
    // alice has used her 5 messages by now: 2 on 587, the one refused for its From: header
    // (it passed MAIL), 1 from sales, 1 on 465.
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: port465, secure: true, auth: { user: "alice", pass: PASSWORD }, tls: { rejectUnauthorized: false } });
    const err = await transport.sendMail({ from: "alice@corp.test", to: "erin@elsewhere.test", subject: "one too many", text: "x" }).then(() => null, (e: { response?: string }) => e);
    expect(err?.response).toBe("450 4.7.1 Rate limit exceeded for user alice, try again later");
  });
});

describe("users through the admin API", () => {
  test("create, list, change the password, delete; bad input is a JSON 400", async () => {
    const create = await fetch(`http://127.0.0.1:${relay.adminPort}/admin/users`, {
      method: "POST",
      headers: { authorization: "Bearer test-admin-token-0123456789abcdef0123456789", "content-type": "application/json" },
      body: JSON.stringify({ name: "bob", password: "another long password", identities: ["bob@corp.test"] }),
    });
    expect(create.status).toBe(201);
    const list = (await (await relay.admin("GET", "/admin/users")).json()) as { users: { name: string }[] };
    expect(list.users.map((u) => u.name)).toEqual(["alice", "bob"]);
    expect(JSON.stringify(list)).not.toContain("password");
    const short = await fetch(`http://127.0.0.1:${relay.adminPort}/admin/users/bob/password`, {
      method: "PUT",
      headers: { authorization: "Bearer test-admin-token-0123456789abcdef0123456789", "content-type": "application/json" },
      body: JSON.stringify({ password: "short" }),
    });
    expect(short.status).toBe(400);
    expect(((await short.json()) as { error: { message: string } }).error.message).toContain("at least 12 characters");
    expect((await relay.admin("DELETE", "/admin/users/bob")).status).toBe(200);
    expect((await relay.admin("DELETE", "/admin/users/bob")).status).toBe(404);
  });
});
