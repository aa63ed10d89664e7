// kill -9 while message bodies are being written to spool files: a body that was still
// arriving leaves a file without a queue row (an orphan). After restart no orphan is left,
// none becomes a message, and every acknowledged message arrives whole.

import { afterEach, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { queueCounts, Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
}, 60_000);

/** A message whose every line names its token: ~40 KiB, ten times queue.inline_max_size. */
const messageFor = (token: string) => `X-Token: ${token}\r\nSubject: spooled ${token}\r\n\r\n${`${token} ${"x".repeat(60)}\r\n`.repeat(600)}`;
const tokenOf = (raw: Buffer) => /X-Token: (\S+)/.exec(raw.toString("latin1"))?.[1];

/** Queue ids whose body lives in the spool (body IS NULL), read as an admin would. */
function spooledRows(dir: string): string[] {
  const db = new Database(join(dir, "state", "queue.db"), { readonly: true });
  try {
    return db.query<{ id: string }, []>("SELECT id FROM messages WHERE body IS NULL ORDER BY id").all().map((r) => r.id);
  } finally {
    db.close();
  }
}
const spoolFiles = (dir: string) => readdirSync(join(dir, "state", "spool")).sort();

test("kill -9 while bodies are being spooled: orphans removed at restart, none becomes a message, every acknowledged message arrives whole", async () => {
  // The next hop is slow during the load (a backlog builds up), then paused across the restart.
  let hold: () => Promise<void> | undefined = () => Bun.sleep(5);
  const sink = await Sink.start({ hold: () => hold() });
  cleanups.push(() => sink.close());
  const dir = tempDir();
  cleanups.push(() => relay.cleanup());
  const config = { relay: { domains: { "dest.test": sink.route } }, queue: { inline_max_size: "4KiB" }, delivery: { concurrency_per_route: 2 } };
  let relay = await Relay.start({ config, dir });

  // One client stops in the middle of its body: its spool file exists, its row never will.
  const stalled = await SmtpTalk.open(relay.port, { localAddress: "127.0.0.60" });
  await stalled.talk.send("EHLO stalled.test");
  expect((await stalled.talk.send("MAIL FROM:<stall@origin.test>")).code).toBe(250);
  expect((await stalled.talk.send("RCPT TO:<bob@dest.test>")).code).toBe(250);
  expect((await stalled.talk.send("DATA")).code).toBe(354);
  stalled.talk.write(messageFor("stalled").slice(0, 20_000));
  await waitFor(() => spoolFiles(relay.dir).length === 1, 10_000, "the stalled body's spool file");
  const stalledFile = spoolFiles(relay.dir)[0]!;

  // Six sessions (own source addresses) send spooled messages until the kill.
  const acked = new Set<string>();
  const failures: string[] = [];
  let killed = false;
  const loading = Promise.all(
    Array.from({ length: 6 }, async (_, s) => {
      try {
        const { talk } = await SmtpTalk.open(relay.port, { localAddress: `127.0.0.${50 + s}` });
        await talk.send("EHLO load.test");
        for (let i = 0; i < 1000; i++) {
          const token = `s${s}-m${i}`;
          const r = await talk.transaction("load@origin.test", ["bob@dest.test"], messageFor(token));
          if (r.code === 250) acked.add(token);
          else if (!killed) failures.push(`${token}: ${r.code} ${r.text}`);
        }
        failures.push(`session ${s} finished before the kill`);
      } catch (err) {
        if (!killed) failures.push(`session ${s}: ${(err as Error).message}`);
      }
    }),
  );
  await waitFor(() => acked.size >= 300 || failures.length > 0, 60_000, "300 acknowledged messages");
  const deliveredAtKill = new Set(sink.messages.map((m) => tokenOf(m.raw)));
  killed = true;
  await relay.kill9();
  await loading;
  expect(failures).toEqual([]);

  // At the kill: a backlog of acknowledged spooled messages, and files without a row.
  const rows = new Set(spooledRows(dir));
  const orphans = spoolFiles(dir).filter((f) => !rows.has(f));
  expect(orphans).toContain(stalledFile);
  expect([...acked].filter((t) => !deliveredAtKill.has(t)).length).toBeGreaterThanOrEqual(50);

  let resume = () => {};
  const paused = new Promise<void>((resolve) => (resume = resolve));
  hold = () => paused;
  relay = await Relay.start({ config: { ...config, delivery: {} }, dir });
  // Start-up removed the orphans before taking mail: every file left has its row.
  expect(spoolFiles(dir)).toEqual(spooledRows(dir));
  for (const o of orphans) expect(spoolFiles(dir)).not.toContain(o);
  hold = () => undefined;
  resume();

  const arrived = () => new Map(sink.messages.map((m) => [tokenOf(m.raw), m.raw.toString("latin1")]));
  const missing = () => {
    const got = arrived();
    return [...acked].filter((t) => !got.has(t));
  };
  await waitFor(() => missing().length === 0, 90_000, "every acknowledged message at the sink");
  await waitFor(() => queueCounts(dir).messages === 0, 30_000, "an empty queue");
  // Whole: each arrived exactly as sent (after our Received: header); the stalled one never.
  const got = arrived();
  const damaged = [...acked].filter((t) => {
    const text = got.get(t)!;
    return text.slice(text.indexOf("X-Token: ")) !== messageFor(t);
  });
  expect(damaged).toEqual([]);
  expect(got.has("stalled")).toBe(false);
  await waitFor(() => spoolFiles(dir).length === 0, 5000, "an empty spool");
  expect(await relay.stop()).toBe(0);
}, 180_000);
