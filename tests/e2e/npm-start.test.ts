// The README's first command, `npm start`, as a new user meets it: it builds and starts the
// relay on the embedded trial config (SMTP on 127.0.0.1:2525, the sink on 127.0.0.1:2526), a
// message sent with the README's command lands in data/sink/, and Ctrl-C (SIGINT to the
// process group, as a terminal sends it) stops everything and frees both ports. It runs in a
// copy of the working tree (node_modules linked), so the repository's data/ is never touched.

import { afterAll, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { accepts } from "../helpers/pebble.ts";
import { tempDir, waitFor } from "../helpers/relay.ts";
import { run } from "../helpers/run.ts";

const REPO = resolve(import.meta.dir, "../..");
const copy = tempDir("mailraven-npm-start-");
let pgid = 0;

afterAll(async () => {
  // Whatever happened, nothing of ours keeps running.
  if (pgid) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  rmSync(copy, { recursive: true, force: true });
}, 60_000);

/** The tree as the user has it, without its build output, data/ and node_modules (linked instead). Not git: mutate.sh runs this in a plain copy. */
async function copyTree(): Promise<void> {
  const excludes = ["./node_modules", "./data", "./.git", "./build/mailraven", "./build/mailraven.map", "./build/mailraven-baseline", "./build/mailraven-baseline.map"];
  const tar = await run(["bash", "-c", `tar -C '${REPO}' ${excludes.map((e) => `--exclude='${e}'`).join(" ")} -cf - . | tar -C '${copy}' -xf -`]);
  expect(tar.err).toBe("");
  expect(tar.code).toBe(0);
  symlinkSync(join(REPO, "node_modules"), join(copy, "node_modules"));
}

const groupAlive = async () => (await run(["ps", "-o", "pid=", "-g", String(pgid)])).out.trim() !== "";

test("npm start: builds, starts, takes a message into data/sink/, and stops cleanly on Ctrl-C", async () => {
  for (const port of [2525, 2526]) if (await accepts(port)) throw new Error(`127.0.0.1:${port} is in use: npm start needs it (another npm start running?)`);
  const repoData = existsSync(join(REPO, "data")) ? readdirSync(join(REPO, "data")).sort() : null;
  await copyTree();

  // setsid: its own process group, so SIGINT reaches npm, the script, the relay and the sink as from a terminal.
  const proc = Bun.spawn(["setsid", "npm", "start"], { cwd: copy, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  pgid = proc.pid;
  const output = { text: "" };
  const decoder = new TextDecoder();
  for (const stream of [proc.stdout, proc.stderr]) void (async () => { for await (const c of stream) output.text += decoder.decode(c, { stream: true }); })();

  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`npm start exited with ${proc.exitCode}: ${output.text}`);
    return (await accepts(2525)) && (await accepts(2526));
  }, 120_000, "npm start to listen on 2525 and 2526");
  expect(output.text).toContain("mailraven: SMTP on 127.0.0.1:2525");
  expect(existsSync(join(copy, "build", "mailraven"))).toBe(true);

  // The README's command, from the copy.
  const sent = await run(["bash", "-c", `cd '${copy}' && npx bun scripts/send-test.ts someone@example.test`]);
  expect(sent.err).toBe("");
  expect(sent.out).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{16}\n$/);
  const sinkDir = join(copy, "data", "sink");
  const eml = await waitFor(() => (existsSync(sinkDir) ? readdirSync(sinkDir).find((f) => f.endsWith(".eml")) : undefined), 20_000, "the message in data/sink/");
  const text = readFileSync(join(sinkDir, eml), "utf8");
  expect(text).toMatch(/^Received: from /);
  expect(text).toContain("Subject: mailraven test message");
  expect(text).toContain("To: someone@example.test");
  expect(readdirSync(sinkDir)).toContain(eml.replace(/\.eml$/, ".json"));

  // Ctrl-C.
  process.kill(-pgid, "SIGINT");
  await waitFor(async () => !(await groupAlive()), 30_000, "every process of npm start to exit");
  await proc.exited;
  expect(output.text).toContain('"msg":"stopped"');
  expect(await accepts(2525)).toBe(false);
  expect(await accepts(2526)).toBe(false);
  pgid = 0;
  // The repository's own data/ was not touched.
  expect(existsSync(join(REPO, "data")) ? readdirSync(join(REPO, "data")).sort() : null).toEqual(repoData);
}, 180_000);
