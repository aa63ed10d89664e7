import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createLogger, type LogLevel } from "../../src/log.ts";

function capture(level: LogLevel) {
  const lines: string[] = [];
  const log = createLogger(level, (line) => lines.push(line));
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, records };
}

describe("createLogger", () => {
  test("writes one JSON object per line with ts, level, msg and the fields", () => {
    const { log, lines, records } = capture("debug");
    const before = Date.now();
    log.info("message queued", { queue_id: "01HQZ3Y8K2M4N6P8", size: 1234 });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith("\n")).toBe(true);
    expect(lines[0]!.indexOf("\n")).toBe(lines[0]!.length - 1);
    const [r] = records();
    expect(r).toMatchObject({ level: "info", msg: "message queued", queue_id: "01HQZ3Y8K2M4N6P8", size: 1234 });
    const ts = Date.parse(r!.ts as string);
    expect(ts).toBeGreaterThanOrEqual(before - 1);
    expect(ts).toBeLessThanOrEqual(Date.now() + 1);
    expect(r!.ts).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  test("newlines in messages and fields stay inside the one line", () => {
    const { log, lines } = capture("debug");
    log.warn("line one\nline two", { helo: "evil\r\n{\"level\":\"error\"}" });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.slice(0, -1)).not.toMatch(/[\r\n]/);
    expect(JSON.parse(lines[0]!).helo).toBe('evil\r\n{"level":"error"}');
  });

  test.each([
    ["debug", ["debug", "info", "warn", "error"]],
    ["info", ["info", "warn", "error"]],
    ["warn", ["warn", "error"]],
    ["error", ["error"]],
  ] as const)("level %p emits %p", (level, expected) => {
    const { log, records } = capture(level);
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    expect(records().map((r) => r.level)).toEqual([...expected]);
  });

  test("Error values are serialized as {message, code}", () => {
    const { log, records } = capture("info");
    const err = Object.assign(new Error("connect ECONNREFUSED 10.0.0.5:25"), { code: "ECONNREFUSED" });
    log.error("delivery failed", { error: err, nested: { cause: new Error("plain") } });
    const [r] = records();
    expect(r!.error).toEqual({ message: "connect ECONNREFUSED 10.0.0.5:25", code: "ECONNREFUSED" });
    expect(r!.nested).toEqual({ cause: { message: "plain" } });
    expect(JSON.stringify(r)).not.toContain("stack");
  });

  test("bigint values do not break logging", () => {
    const { log, records } = capture("info");
    log.info("big", { n: 2n ** 70n });
    expect(records()[0]!.n).toBe("1180591620717411303424");
  });

  test("child loggers add their fields and keep the level", () => {
    const { log, records } = capture("warn");
    const child = log.child({ session: "s1", ip: "192.0.2.1" });
    child.info("hidden");
    child.warn("shown", { cmd: "RCPT" });
    log.warn("parent");
    const rs = records();
    expect(rs).toHaveLength(2);
    expect(rs[0]).toMatchObject({ level: "warn", msg: "shown", session: "s1", ip: "192.0.2.1", cmd: "RCPT" });
    expect(rs[1]).not.toHaveProperty("session");
    const grandchild = child.child({ queue_id: "Q" });
    grandchild.error("x");
    expect(records()[2]).toMatchObject({ session: "s1", queue_id: "Q" });
  });

  test("the fixed keys come first, then the fields", () => {
    const { log, lines } = capture("info");
    log.info("m", { a: 1 });
    expect(Object.keys(JSON.parse(lines[0]!))).toEqual(["ts", "level", "msg", "a"]);
  });
});

describe("journald priorities", () => {
  const MODULE = resolve(import.meta.dir, "../../src/log.ts");

  /** Runs a process that logs at every level with stdout on a file, as systemd would connect it to the journal. */
  async function logTo(journalStream: (path: string) => string | undefined): Promise<string[]> {
    const dir = mkdtempSync(join(tmpdir(), "mailraven-log-"));
    try {
      const path = join(dir, "stdout");
      writeFileSync(path, "");
      const script = `import { createLogger, stdoutWriter } from ${JSON.stringify(MODULE)};
const log = createLogger("debug", stdoutWriter(process.env.JOURNAL_STREAM));
log.debug("d"); log.info("i"); log.warn("w", { n: 1 }); log.error("e");`;
      const env: Record<string, string | undefined> = { ...process.env, JOURNAL_STREAM: journalStream(path) };
      const proc = Bun.spawn([process.execPath, "-e", script], { stdin: "ignore", stdout: Bun.file(path), stderr: "pipe", env });
      expect(await proc.exited).toBe(0);
      return readFileSync(path, "utf8").split("\n").filter((l) => l !== "");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const streamOf = (path: string) => {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };

  test("stdout is the journal stream: each line starts with its syslog priority, then the JSON", async () => {
    const lines = await logTo(streamOf);
    expect(lines.map((l) => l.slice(0, 3))).toEqual(["<7>", "<6>", "<4>", "<3>"]);
    expect(JSON.parse(lines[2]!.slice(3))).toMatchObject({ level: "warn", msg: "w", n: 1 });
  });

  test("JOURNAL_STREAM naming another file (stdout redirected by the admin), or unset or malformed: plain JSON lines", async () => {
    for (const stream of [(p: string) => streamOf(p).replace(/\d+$/, (ino) => String(BigInt(ino) + 1n)), () => undefined, () => "journal"]) {
      const lines = await logTo(stream);
      expect(lines).toHaveLength(4);
      for (const l of lines) expect(l.startsWith("{")).toBe(true);
    }
  });
});
