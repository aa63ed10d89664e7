// The time of the newest good backup in backup.dir, for the relay's
// mailraven_backup_last_success_timestamp_seconds at start-up: a backup is good when it has its
// final name and a readable manifest (written last, so the backup is complete). Backups made
// before manifests count by the time in their name when they hold a queue.db.

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { readManifest } from "./manifest.ts";
import { plainEntry } from "./safe-fs.ts";
import { PREFIX } from "./snapshot.ts";

/** Unix time in seconds, or null when there is no good backup (or no backup directory). */
export function newestBackupTime(backupDir: string): number | null {
  let names: string[];
  try {
    names = readdirSync(backupDir).filter((n) => n.startsWith(PREFIX)).sort().reverse();
  } catch {
    return null;
  }
  for (const name of names) {
    const dir = join(backupDir, name);
    try {
      const manifest = readManifest(dir);
      if (manifest) return Date.parse(manifest.created_at) / 1000;
      const m = /^mailraven-(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z/.exec(name);
      if (m && plainEntry(join(dir, "queue.db")) === "file") return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) / 1000;
    } catch {
      // Not a good backup (unreadable or damaged manifest): look at the next older one.
    }
  }
  return null;
}
