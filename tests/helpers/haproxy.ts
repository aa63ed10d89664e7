// A real HAProxy (Debian's package, installed by scripts/test.sh) as the TCP load balancer in
// front of relay nodes: a generated config in a temp dir, one frontend on a free loopback port,
// round robin over the backends, each sent a PROXY header (send-proxy or send-proxy-v2).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { accepts, freePort } from "./pebble.ts";

const BINARY = existsSync("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : "haproxy";

export class HaProxy {
  private stderr = "";

  private constructor(
    private readonly proc: Subprocess<"ignore", "ignore", "pipe">,
    readonly port: number,
    private readonly dir: string,
  ) {
    void new Response(proc.stderr).text().then((t) => (this.stderr = t));
  }

  /** `backends`: the nodes' SMTP ports on 127.0.0.1; `send`: the PROXY protocol version they get. */
  static async start(backends: readonly number[], send: "send-proxy" | "send-proxy-v2" = "send-proxy-v2"): Promise<HaProxy> {
    const dir = mkdtempSync(join(tmpdir(), "mailraven-haproxy-"));
    const port = await freePort();
    const config = join(dir, "haproxy.cfg");
    writeFileSync(
      config,
      [
        "global",
        "  maxconn 500",
        "defaults",
        "  mode tcp",
        "  timeout connect 5s",
        "  timeout client 60s",
        "  timeout server 60s",
        "frontend smtp",
        `  bind 127.0.0.1:${port}`,
        "  default_backend nodes",
        "backend nodes",
        "  balance roundrobin",
        ...backends.map((p, i) => `  server node${i} 127.0.0.1:${p} ${send}`),
        "",
      ].join("\n"),
    );
    // -db: stay in the foreground, so the test owns the process.
    const proc = Bun.spawn([BINARY, "-db", "-f", config], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    const h = new HaProxy(proc, port, dir);
    const deadline = performance.now() + 15_000;
    while (!(await accepts(port))) {
      if (proc.exitCode !== null || performance.now() > deadline) {
        await h.stop();
        throw new Error(`haproxy did not listen on 127.0.0.1:${port}: ${h.stderr}`);
      }
      await Bun.sleep(25);
    }
    return h;
  }

  async stop(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.proc.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
