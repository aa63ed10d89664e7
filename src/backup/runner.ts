// Runs one backup at a time for the admin API: spawns `mailraven backup --offline` (our own
// binary, fixed arguments) so VACUUM INTO never blocks the relay's event loop, and keeps spool
// files in place while it copies them.

import type { Metrics } from "../metrics.ts";
import type { QueueStore } from "../queue/store.ts";
import type { BackupResult } from "./snapshot.ts";

export class BackupBusy extends Error {}

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
      if (code !== 0) throw new Error(err.trim().replace(/^mailraven: /, "") || `backup process exited with ${code}`);
      const result = JSON.parse(out) as BackupResult;
      this.metrics.backups.inc({ outcome: "ok" });
      this.metrics.backupLastDuration.set(result.duration_ms / 1000);
      this.metrics.backupLastSuccess.set(Math.floor(Date.now() / 1000));
      return result;
    } catch (err) {
      this.metrics.backups.inc({ outcome: "failed" });
      throw err;
    } finally {
      release();
      this.running = false;
    }
  }
}
