// Runs a program to completion and collects what it printed: the one way the tests call swaks,
// openssl and the mailraven command line.

export interface RunResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
  /** stdout then stderr, for tools that print their dialog on either. */
  readonly text: string;
}

export async function run(cmd: string[], stdin?: string): Promise<RunResult> {
  const proc = Bun.spawn(cmd, { stdin: stdin === undefined ? "ignore" : new Response(stdin), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out, err, text: out + err };
}
