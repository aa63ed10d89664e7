// Runs one backup at a time for the admin API: spawns `mailraven backup --offline` (our own
// binary, fixed arguments) so VACUUM INTO never blocks the relay's event loop, and keeps spool
// files in place while it copies them. A failure is logged with its details; what the API says
// about it names no path and carries no stack trace.

import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { QueueStore } from "../queue/store.ts";
import type { BackupResult } from "./snapshot.ts";

export class BackupBusy extends Error {}

/** A backup that failed; `message` is safe to show to an API client. */
export class BackupFailed extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** argv that starts this same program: the compiled binary, or bun with the entry script. */
export function selfCommand(): string[] {
  return Bun.main.startsWith("/$bunfs/") ? [process.execPath] : [process.execPath, Bun.main];
}

export class BackupRunner {
  private running = false;

  constructor(
    private readonly store: QueueStore,
    private readonly metrics: Metrics,
    private readonly configPath: () => string[],
    private readonly log: Logger,
  ) {}

  get busy(): boolean {
    return this.running;
  }

  async run(): Promise<BackupResult> {
    if (this.running) throw new BackupBusy("a backup is already running");
    this.running = true;
    const release = this.store.holdSpoolRemovals();
    try {
      const proc = Bun.spawn([...selfCommand(), "backup", "--offline", "--json", ...this.configPath()], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      if (code !== 0) {
        this.log.error("backup failed", { exit_code: code, error: err.trim().replace(/^mailraven: /, "") });
        const e = parseJson<{ error?: { code?: string; message?: string } }>(out)?.error;
        throw new BackupFailed(e?.code ?? "failed", e?.message ?? "the backup failed; see the log (journalctl -u mailraven -p err)");
      }
      const result = parseJson<BackupResult>(out);
      if (!result?.manifest) {
        this.log.error("backup failed", { error: "unreadable answer from the backup process", output: out.slice(0, 500) });
        throw new BackupFailed("failed", "the backup process gave no manifest; see the log");
      }
      this.metrics.backups.inc({ outcome: "ok" });
      this.metrics.backupLastDuration.set(result.duration_ms / 1000);
      this.metrics.backupLastSuccess.set(Date.parse(result.manifest.created_at) / 1000);
      return result;
    } catch (err) {
      this.metrics.backups.inc({ outcome: "failed" });
      if (err instanceof BackupFailed) throw err;
      this.log.error("backup failed", { error: err });
      throw new BackupFailed("failed", "the backup could not be started; see the log");
    } finally {
      release();
      this.running = false;
    }
  }
}

function parseJson<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}
