// Structured logging: one JSON object per line on stdout, which journald stores as is.
// Callers pass fields, never message bodies or secrets.
//
// Under systemd, stdout is a stream to journald, which files every line at the unit's
// SyslogLevel (info) unless the line starts with a "<N>" syslog priority (sd-daemon(3)).
// journaldWriter adds that prefix, so `journalctl -u mailraven -p warning` shows the relay's
// warnings and errors. It is used only when JOURNAL_STREAM names stdout itself (systemd.exec(5)):
// piped into a file or another program, the lines stay plain JSON.

import { fstatSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** Syslog priorities (RFC 5424 6.2.1) of our levels. */
const PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

export type LogWriter = (line: string, level: LogLevel) => void;

const plainWriter: LogWriter = (line) => writeStdout(line);
const journaldWriter: LogWriter = (line, level) => writeStdout(`<${PRIORITY[level]}>${line}`);

let pendingStdout = "";
let exitHooked = false;

/**
 * Text for stdout, written once per turn of the event loop: under load a session's lines and
 * the delivery thread's cost one write between them, not one each. What is pending when the
 * process exits is written on the way out.
 */
export function writeStdout(text: string): void {
  if (pendingStdout === "") {
    setImmediate(flushStdout);
    if (!exitHooked) process.once("exit", flushStdout);
    exitHooked = true;
  }
  pendingStdout += text;
}

function flushStdout(): void {
  if (pendingStdout === "") return;
  const text = pendingStdout;
  pendingStdout = "";
  process.stdout.write(text);
}

/**
 * Whether file descriptor `fd` is the journal stream systemd announced in JOURNAL_STREAM
 * ("device:inode" of the stream it connected to stdout and stderr).
 */
export function isJournalStream(journalStream: string | undefined, fd = 1): boolean {
  const m = /^(\d+):(\d+)$/.exec(journalStream ?? "");
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The writer for stdout: syslog priorities when it is the journal, plain JSON lines otherwise. */
export function stdoutWriter(journalStream: string | undefined): LogWriter {
  return isJournalStream(journalStream) ? journaldWriter : plainWriter;
}

/** stdoutWriter's lines, handed to `out` (the delivery thread's go to the SMTP thread, which writes them to stdout). */
export function linesTo(journalStream: string | undefined, out: (text: string) => void): LogWriter {
  return isJournalStream(journalStream) ? (line, level) => out(`<${PRIORITY[level]}>${line}`) : (line) => out(line);
}

export function createLogger(
  level: LogLevel,
  write: LogWriter = plainWriter,
  base: LogFields = {},
): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    write(JSON.stringify({ ts: new Date().toISOString(), level: lvl, msg, ...base, ...fields }, errorReplacer) + "\n", lvl);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(level, write, { ...base, ...fields }),
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { message: value.message, code: (value as { code?: unknown }).code };
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * A bug in one session or one delivery must not take the relay down: log it and carry on.
 * `where` names the thread in the message (" in the delivery thread"; empty on the SMTP thread).
 */
export function installCrashGuards(log: Logger, where = ""): void {
  process.on("uncaughtException", (err) => log.error(`uncaught exception${where}`, { error: err, stack: err.stack }));
  process.on("unhandledRejection", (err) => log.error(`unhandled rejection${where}`, { error: err }));
}
