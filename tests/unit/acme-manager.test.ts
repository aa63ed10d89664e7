// The ACME certificate's life without a CA: the order is a stub that hands out certificates
// made with openssl (or fails), the clock and the timers are the test's. Cache reuse, renewal
// time, new names or CA, backoff after failures, and the files on disk.

import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AcmeManager, renewalTime, retryDelay, type Timer } from "../../src/acme/manager.ts";
import type { Issued, OrderRequest } from "../../src/acme/order.ts";
import { AcmeStore, parseCertificate } from "../../src/acme/store.ts";
import type { AcmeConfig } from "../../src/config/types.ts";
import { createLogger } from "../../src/log.ts";
import type { TlsMaterial } from "../../src/runtime.ts";

const DAY = 86_400_000;
const root = mkdtempSync(join(tmpdir(), "mailraven-acme-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let made = 0;
/** A self-signed certificate for `names`, valid from now for `days`. */
function makeCert(names: string[], days = 90): Issued {
  const base = join(root, `c${++made}`);
  const r = Bun.spawnSync(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${base}.key`, "-out", `${base}.pem`, "-days", String(days), "-subj", `/CN=${names[0]}`, "-addext", `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}`],
    { stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return { key: readFileSync(`${base}.key`), chain: readFileSync(`${base}.pem`) };
}

interface Harness {
  manager: AcmeManager;
  config: AcmeConfig;
  setConfig(c: Partial<AcmeConfig>): void;
  /** A reload that turns acme off or on. */
  setEnabled(on: boolean): void;
  installed: TlsMaterial[];
  orders: OrderRequest[];
  timers: { fn: () => void; ms: number; cancelled: boolean }[];
  logs: { level: string; msg: string; [k: string]: unknown }[];
  clock: { now: number };
  /** Runs the last timer that is still armed. */
  fire(): void;
  /** Waits for the orders placed so far; the manager reacts to each before the test does (its handler was attached first). */
  settle(): Promise<void>;
}

function harness(order: (req: OrderRequest) => Promise<Issued>, dir = mkdtempSync(join(root, "state-"))): Harness {
  let off = false;
  const pending: Promise<Issued>[] = [];
  let config: AcmeConfig = {
    directory: "https://ca.test/dir",
    email: "postmaster@example.org",
    hostnames: ["mx.example.org"],
    httpListen: { host: "127.0.0.1", port: 0 },
    renewBeforeMs: 30 * DAY,
    caFile: null,
    dir: join(dir, "acme"),
  };
  const h: Harness = {
    config,
    setConfig: (c) => {
      config = { ...config, ...c };
      h.config = config;
    },
    setEnabled: (on) => void (off = !on),
    installed: [],
    orders: [],
    timers: [],
    logs: [],
    clock: { now: Date.now() },
    fire: () => {
      const t = h.timers.findLast((x) => !x.cancelled);
      if (!t) throw new Error("no timer armed");
      t.cancelled = true;
      t.fn();
    },
    settle: async () => {
      await Promise.allSettled(pending);
    },
    manager: null as unknown as AcmeManager,
  };
  const log = createLogger("debug", (line) => void h.logs.push(JSON.parse(line)));
  h.manager = new AcmeManager({
    config: () => (off ? null : config),
    install: (m) => void h.installed.push(m),
    log,
    order: (req) => {
      h.orders.push(req);
      const p = order(req);
      pending.push(p);
      return p;
    },
    now: () => h.clock.now,
    setTimer: (fn, ms): Timer => {
      const t = { fn, ms, cancelled: false };
      h.timers.push(t);
      return { cancel: () => void (t.cancelled = true) };
    },
  });
  return h;
}

const armed = (h: Harness) => h.timers.filter((t) => !t.cancelled);

describe("renewal time", () => {
  test("renew_before ahead of expiry, but never in the first half of the lifetime", () => {
    const ninety = { notBefore: 0, notAfter: 90 * DAY };
    expect(renewalTime(ninety, 30 * DAY)).toBe(60 * DAY);
    // Six-day certificates with a 30-day renew_before: at half-life, not in a loop.
    expect(renewalTime({ notBefore: 0, notAfter: 6 * DAY }, 30 * DAY)).toBe(3 * DAY);
  });

  test("backoff: 1, 2, 4 ... minutes, at most an hour", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 20].map(retryDelay)).toEqual([60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000, 3_600_000]);
  });
});

describe("AcmeManager", () => {
  let first: Issued;
  beforeEach(() => {
    first = makeCert(["mx.example.org"]);
  });

  test("no cached certificate: orders at once, saves key and chain (0700 dir, 0600 keys), installs it, checks again within the hour", async () => {
    const h = harness(async () => first);
    expect(h.manager.loadCached(h.config)).toBeNull();
    h.manager.start();
    await h.settle();
    expect(h.orders).toHaveLength(1);
    expect(h.orders[0]!.config.hostnames).toEqual(["mx.example.org"]);
    expect(h.installed).toEqual([{ key: first.key, cert: first.chain }]);
    expect(h.logs.map((l) => l.msg)).toEqual(["acme order started", "acme certificate obtained"]);
    expect(h.logs[0]).toMatchObject({ reason: "no certificate", attempt: 1 });
    const dir = h.config.dir;
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "account.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "certificate.key")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, "certificate.pem"), "utf8")).toBe(first.chain.toString());
    expect(JSON.parse(readFileSync(join(dir, "certificate.json"), "utf8")).directory).toBe("https://ca.test/dir");
    expect(armed(h).map((t) => t.ms)).toEqual([3_600_000]);
    // The account key is made once and given to every order.
    expect(h.orders[0]!.accountKey).toEqual(readFileSync(join(dir, "account.key")));
  });

  test("a cached certificate that is good is served from the start, and no order is placed", async () => {
    const dir = mkdtempSync(join(root, "state-"));
    const seed = harness(async () => first, dir);
    seed.manager.start();
    await seed.settle();

    const h = harness(async () => makeCert(["mx.example.org"]), dir);
    expect(h.manager.loadCached(h.config)).toEqual({ key: first.key, cert: first.chain });
    h.manager.start();
    await h.settle();
    expect(h.orders).toHaveLength(0);
    expect(h.logs.map((l) => l.msg)).toEqual(["acme certificate loaded from cache"]);
    // Checked hourly; at renewal time (60 days from now) it is ordered.
    expect(armed(h).map((t) => t.ms)).toEqual([3_600_000]);
    h.clock.now += 61 * DAY;
    h.fire();
    await h.settle();
    expect(h.orders).toHaveLength(1);
    expect(h.logs.find((l) => l.msg === "acme order started")).toMatchObject({ reason: "due for renewal" });
    expect(h.installed).toHaveLength(1);
  });

  test("a due certificate is still served while its successor is ordered", async () => {
    const dir = mkdtempSync(join(root, "state-"));
    new AcmeStore(join(dir, "acme")).save(parseCertificate(first.key, first.chain, "https://ca.test/dir"));
    const h = harness(async () => makeCert(["mx.example.org"]), dir);
    h.clock.now += 70 * DAY;
    expect(h.manager.loadCached(h.config)).toEqual({ key: first.key, cert: first.chain });
    expect(h.logs[0]).toMatchObject({ msg: "acme certificate loaded from cache", order_needed: "due for renewal" });
    h.manager.start();
    await h.settle();
    expect(h.orders).toHaveLength(1);
    expect(h.installed).toHaveLength(1);
  });

  test("new hostnames or another CA after a reload: a new order", async () => {
    const h = harness(async (req) => makeCert([...req.config.hostnames]));
    h.manager.start();
    await h.settle();
    h.setConfig({ hostnames: ["mx.example.org", "smtp.example.org"] });
    h.manager.reconsider();
    await h.settle();
    expect(h.orders).toHaveLength(2);
    expect(h.logs.filter((l) => l.msg === "acme order started")[1]).toMatchObject({ reason: "hostnames not in the certificate: smtp.example.org" });
    // Fewer names than the certificate has: nothing to do.
    h.setConfig({ hostnames: ["smtp.example.org"] });
    h.manager.reconsider();
    await h.settle();
    expect(h.orders).toHaveLength(2);
    h.setConfig({ directory: "https://other-ca.test/dir" });
    h.manager.reconsider();
    await h.settle();
    expect(h.orders).toHaveLength(3);
    expect(h.logs.filter((l) => l.msg === "acme order started")[2]!.reason).toBe("issued by another ACME directory (https://ca.test/dir)");
    expect(h.installed).toHaveLength(3);
  });

  test("failed orders are logged and retried with backoff; the certificate in use stays; success resets the backoff", async () => {
    let fail = true;
    const dir = mkdtempSync(join(root, "state-"));
    new AcmeStore(join(dir, "acme")).save(parseCertificate(first.key, first.chain, "https://ca.test/dir"));
    const h = harness(async () => {
      if (fail) throw Object.assign(new Error(""), { code: "ECONNREFUSED" });
      return makeCert(["mx.example.org"]);
    }, dir);
    h.clock.now += 70 * DAY;
    h.manager.loadCached(h.config);
    h.manager.start();
    await h.settle();
    const failures = () => h.logs.filter((l) => l.msg === "acme order failed; the certificate in use stays in use");
    expect(failures()[0]).toMatchObject({ level: "error", error: "ECONNREFUSED", attempt: 1, retry_in: "1m" });
    expect((failures()[0]!.in_use as { serial: string }).serial).toBe(parseCertificate(first.key, first.chain, null).serial);
    expect(armed(h).map((t) => t.ms)).toEqual([60_000]);
    h.fire();
    await h.settle();
    h.fire();
    await h.settle();
    expect(failures().map((l) => l.retry_in)).toEqual(["1m", "2m", "4m"]);
    expect(h.installed).toHaveLength(0);
    expect(h.manager.material()).toEqual({ key: first.key, cert: first.chain });
    expect(readFileSync(join(dir, "acme", "certificate.pem"), "utf8")).toBe(first.chain.toString());

    fail = false;
    h.fire();
    await h.settle();
    expect(h.installed).toHaveLength(1);
    expect(h.manager.material()!.cert).not.toEqual(first.chain);
    fail = true;
    h.clock.now += 61 * DAY;
    h.fire();
    await h.settle();
    expect(failures().at(-1)).toMatchObject({ attempt: 1, retry_in: "1m" });
  });

  test("a new certificate that is already due (a clock far off) is not ordered again in a loop", async () => {
    const h = harness(async () => makeCert(["mx.example.org"]));
    h.clock.now += 70 * DAY;
    h.manager.start();
    await h.settle();
    expect(h.orders).toHaveLength(1);
    expect(h.installed).toHaveLength(1);
    expect(h.logs.at(-1)).toMatchObject({ level: "warn", msg: "acme: the new certificate is already due for renewal; is the system clock right?" });
    expect(armed(h).map((t) => t.ms)).toEqual([3_600_000]);
  });

  test("a certificate without a requested name is a failed order, not installed", async () => {
    const h = harness(async () => makeCert(["other.example.org"]));
    h.manager.start();
    await h.settle();
    expect(h.installed).toHaveLength(0);
    expect(h.logs.at(-1)).toMatchObject({ msg: "acme order failed; the certificate in use stays in use", error: "the CA issued a certificate without mx.example.org", in_use: null });
  });

  test("a key that does not match the cached certificate is ignored with a warning", () => {
    const dir = mkdtempSync(join(root, "state-"));
    const store = new AcmeStore(join(dir, "acme"));
    store.save(parseCertificate(first.key, first.chain, null));
    writeFileSync(join(dir, "acme", "certificate.key"), makeCert(["mx.example.org"]).key);
    const h = harness(async () => first, dir);
    expect(h.manager.loadCached(h.config)).toBeNull();
    expect(h.logs[0]).toMatchObject({ level: "warn", msg: "acme: ignoring the cached certificate" });
    expect(String(h.logs[0]!.error)).toContain("the private key does not match the certificate");
  });

  test("after stop(), an order that completes is not installed and nothing more is scheduled", async () => {
    let finish: (i: Issued) => void = () => {};
    const h = harness(() => new Promise<Issued>((resolve) => (finish = resolve)));
    h.manager.start();
    h.manager.stop();
    finish(first);
    await h.settle();
    expect(h.installed).toHaveLength(0);
    expect(armed(h)).toHaveLength(0);
  });

  test("acme switched off by a reload: no orders, the certificate stays available", async () => {
    const h = harness(async () => first);
    h.manager.start();
    await h.settle();
    h.setEnabled(false);
    h.clock.now += 80 * DAY;
    h.manager.reconsider();
    await h.settle();
    expect(h.orders).toHaveLength(1);
    expect(h.manager.material()).not.toBeNull();
  });

  test("acme turned on by a reload: a certificate cached by an earlier run is installed, not ordered again", async () => {
    const dir = mkdtempSync(join(root, "state-"));
    new AcmeStore(join(dir, "acme")).save(parseCertificate(first.key, first.chain, "https://ca.test/dir"));
    const h = harness(async () => makeCert(["mx.example.org"]), dir);
    h.setEnabled(false);
    expect(h.manager.loadCached(null)).toBeNull();
    h.manager.start();
    h.setEnabled(true);
    h.manager.reconsider();
    await h.settle();
    expect(h.orders).toHaveLength(0);
    expect(h.installed).toEqual([{ key: first.key, cert: first.chain }]);
  });
});
