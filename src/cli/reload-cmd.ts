// `mailraven reload`: what `systemctl reload mailraven` runs (ExecReload=). The configuration
// has already been loaded and validated by the caller, so an invalid file fails here, with its
// errors, and the relay is never signalled; a valid one is then announced to the running relay
// with SIGHUP. No /bin/kill needed: that comes from procps, which a minimal host lacks.

import type { Config } from "../config/types.ts";
import { checkTlsFiles } from "../runtime.ts";
import { runningPid } from "../state-lock.ts";
import { CliError } from "./admin-client.ts";
import { UsageError } from "./commands.ts";

/**
 * `pidOption`: the relay's pid as systemd knows it ($MAINPID); without it, the process holding
 * the state directory's lock.
 */
export function reloadCommand(config: Config, pidOption: string | undefined, out: (s: string) => void): number {
  try {
    checkTlsFiles(config);
  } catch (err) {
    throw new CliError(`${(err as Error).message}; the running configuration stays in force`);
  }
  let pid: number | null;
  if (pidOption !== undefined) {
    pid = /^[1-9]\d{0,9}$/.test(pidOption) ? Number(pidOption) : null;
    if (pid === null) throw new UsageError(`--pid: expected a process id, found "${pidOption}"`, "reload");
  } else {
    pid = runningPid(config.stateDir);
    if (pid === null) throw new CliError(`no mailraven is running on ${config.stateDir}; start it (systemctl start mailraven)`);
    if (pid === 0) throw new CliError(`the relay on ${config.stateDir} is still starting; try again`);
  }
  try {
    process.kill(pid, "SIGHUP");
  } catch (err) {
    throw new CliError(`cannot signal the relay (pid ${pid}): ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  out(`configuration is valid; mailraven (pid ${pid}) is reloading it\n`);
  return 0;
}
