// "On disk before 250", observed from outside: the running relay is traced with strace (Debian's
// package) and the order of its system calls is checked for one spooled and one inline
// message: the spool file's last write, its fsync, the fsync of the spool directory, the WAL
// write holding the message's row, the WAL's fsync, and only then the write of "250 ... queued
// as ID" to the client's socket. kill -9 cannot show a missing fsync (the page cache survives
// a killed process); this can.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Relay, tempDir, waitFor } from "../helpers/relay.ts";
import { Sink } from "../helpers/sink.ts";
import { SmtpTalk } from "../helpers/smtp-talk.ts";

interface Call {
  readonly name: string;
  /** The arguments as strace printed them, with the fd's path (-y) or socket (-yy) first. */
  readonly args: string;
  readonly result: string;
  /** Line numbers in the trace: the call started, and returned. */
  readonly start: number;
  readonly end: number;
}

/** Parses `strace -f` output, joining "<unfinished ...>" and "<... resumed>" halves. */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, { name: string; args: string; start: number }>();
  text.split("\n").forEach((line, n) => {
    let m = /^(\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$/.exec(line);
    if (m) return void open.set(m[1]!, { name: m[2]!, args: m[3]!, start: n });
    m = /^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+= (.*)$/.exec(line);
    if (m) {
      const begun = open.get(m[1]!);
      open.delete(m[1]!);
      if (begun) calls.push({ name: begun.name, args: begun.args + m[3]!, result: m[4]!, start: begun.start, end: n });
      return;
    }
    m = /^(\d+)\s+(\w+)\((.*)\)\s+= (.*)$/.exec(line);
    if (m) calls.push({ name: m[2]!, args: m[3]!, result: m[4]!, start: n, end: n });
  });
  return calls;
}

const fdPath = (c: Call) => /^\d+<([^>]*)>/.exec(c.args)?.[1] ?? "";
const isSync = (c: Call) => c.name === "fsync" || c.name === "fdatasync";
const isWrite = (c: Call) => ["write", "pwrite64", "writev", "pwritev", "pwritev2"].includes(c.name);

class Tracer {
  private stderr = "";
  private constructor(private readonly proc: Subprocess<"ignore", "ignore", "pipe">, readonly out: string) {}

  /** Attaches to every thread of `pid` (and those it starts); resolves once strace says it is attached. */
  static async attach(pid: number, out: string): Promise<Tracer> {
    const proc = Bun.spawn(
      ["strace", "-f", "-p", String(pid), "-y", "-yy", "-s", "8192", "-e", "trace=write,pwrite64,writev,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync,rename,renameat,renameat2", "-o", out],
      { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
    );
    const t = new Tracer(proc, out);
    void (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stderr) t.stderr += decoder.decode(chunk, { stream: true });
    })();
    await waitFor(() => {
      if (proc.exitCode !== null) throw new Error(`strace could not attach (as root, or with ptrace allowed): ${t.stderr}`);
      return /Process \d+ attached/.test(t.stderr);
    }, 10_000, "strace to attach");
    return t;
  }

  /** Detaches (the relay runs on) and returns the parsed trace. */
  async detach(): Promise<Call[]> {
    this.proc.kill("SIGINT");
    await this.proc.exited;
    return parseTrace(readFileSync(this.out, "utf8"));
  }
}

let sink: Sink;
let relay: Relay;
let calls: Call[];
const ids = { spooled: "", inline: "" };
const dir = tempDir("mailraven-fsync-");

beforeAll(async () => {
  sink = await Sink.start();
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": sink.route } }, queue: { inline_max_size: "4KiB" } } });
  const tracer = await Tracer.attach(relay.proc.pid, join(dir, "trace.txt"));
  const { talk } = await SmtpTalk.open(relay.port);
  await talk.send("EHLO client.test");
  const big = await talk.transaction("a@origin.test", ["bob@dest.test"], `Subject: spooled\r\n\r\n${"spooled body line\r\n".repeat(1200)}`);
  const small = await talk.transaction("a@origin.test", ["bob@dest.test"], "Subject: inline\r\n\r\nsmall body\r\n");
  talk.close();
  expect([big.code, small.code]).toEqual([250, 250]);
  ids.spooled = big.text.slice(-16);
  ids.inline = small.text.slice(-16);
  await waitFor(() => sink.messages.length === 2, 20_000, "both deliveries");
  calls = await tracer.detach();
}, 60_000);

afterAll(async () => {
  await relay?.stop();
  relay?.cleanup();
  await sink?.close();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** The write of "250 ... queued as ID" to the client's socket. */
function reply(id: string): Call {
  const c = calls.find((x) => (x.name === "sendto" || isWrite(x)) && fdPath(x).startsWith("TCP:") && x.args.includes(`250 2.0.0 Ok: queued as ${id}`));
  if (!c) throw new Error(`no write of the 250 for ${id} in the trace`);
  return c;
}

/** The commit of the message's row: the first WAL write that holds its queue id, then the WAL's next sync. */
function commitOf(id: string): { write: Call; sync: Call } {
  const wal = calls.filter((c) => fdPath(c).endsWith("/state/queue.db-wal"));
  const write = wal.find((c) => isWrite(c) && c.args.includes(id));
  if (!write) throw new Error(`no WAL write holding ${id}`);
  const sync = wal.find((c) => isSync(c) && c.start > write.end);
  if (!sync) throw new Error(`no sync of the WAL after the write holding ${id}`);
  return { write, sync };
}

describe("system call order before 250", () => {
  test("a spooled body: file written, file fsync, directory fsync, WAL write, WAL fsync, then 250", () => {
    const spoolFile = join(relay.dir, "state", "spool", ids.spooled);
    const writes = calls.filter((c) => isWrite(c) && fdPath(c) === spoolFile);
    expect(writes.length).toBeGreaterThan(0);
    const fileSync = calls.find((c) => isSync(c) && fdPath(c) === spoolFile);
    expect(fileSync).toBeDefined();
    const dirSync = calls.find((c) => c.name === "fsync" && fdPath(c) === join(relay.dir, "state", "spool") && c.start > fileSync!.end);
    expect(dirSync).toBeDefined();
    const commit = commitOf(ids.spooled);
    const ack = reply(ids.spooled);
    for (const c of [fileSync!, dirSync!, commit.sync]) expect(c.result).toBe("0");
    expect(writes.at(-1)!.end).toBeLessThan(fileSync!.start);
    expect(fileSync!.end).toBeLessThan(dirSync!.start);
    expect(dirSync!.end).toBeLessThan(commit.sync.start);
    expect(commit.sync.end).toBeLessThan(ack.start);
  });

  test("an inline body: the WAL write holding it, the WAL fsync, then 250", () => {
    const commit = commitOf(ids.inline);
    const ack = reply(ids.inline);
    expect(commit.write.end).toBeLessThan(commit.sync.start);
    expect(commit.sync.result).toBe("0");
    expect(commit.sync.end).toBeLessThan(ack.start);
    // Nothing of it went to the spool.
    expect(calls.some((c) => fdPath(c).endsWith(`/spool/${ids.inline}`))).toBe(false);
  });
});
