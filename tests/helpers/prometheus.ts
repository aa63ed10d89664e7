// A real Prometheus (Debian's package) for the tests: started on a loopback port with a
// temporary configuration and storage directory, scraping the given targets every second with
// a bearer token, and loading the given rule files. Queries go through its HTTP API.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "./pebble.ts";

export interface PrometheusOptions {
  /** host:port of /metrics endpoints, scraped as job "mailraven". */
  readonly targets: readonly string[];
  readonly token: string;
  readonly ruleFiles?: readonly string[];
}

export interface QueryResult {
  readonly status: "success" | "error";
  readonly errorType?: string;
  readonly error?: string;
  readonly data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

export class Prometheus {
  private log = "";

  private constructor(private readonly proc: Subprocess<"ignore", "pipe", "pipe">, readonly port: number) {
    const decoder = new TextDecoder();
    void (async () => {
      for await (const chunk of proc.stderr) this.log += decoder.decode(chunk, { stream: true });
    })();
    void new Response(proc.stdout).text();
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(dir: string, opts: PrometheusOptions): Promise<Prometheus> {
    mkdirSync(join(dir, "data"), { recursive: true });
    const config = {
      global: { scrape_interval: "1s", scrape_timeout: "900ms", evaluation_interval: "1s" },
      rule_files: opts.ruleFiles ?? [],
      scrape_configs: [{ job_name: "mailraven", authorization: { credentials: opts.token }, static_configs: [{ targets: opts.targets }] }],
    };
    writeFileSync(join(dir, "prometheus.yml"), JSON.stringify(config, null, 2)); // JSON is YAML
    const port = await freePort();
    const proc = Bun.spawn(
      ["prometheus", `--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
    );
    const prometheus = new Prometheus(proc, port);
    await prometheus.waitFor(async () => (await fetch(`${prometheus.url}/-/ready`).catch(() => null))?.ok === true, 30_000, "Prometheus ready");
    return prometheus;
  }

  async query(expr: string): Promise<QueryResult> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return (await res.json()) as QueryResult;
  }

  /** The health of each scrape target, as Prometheus reports it. */
  async targets(): Promise<{ health: string; lastError: string; scrapeUrl: string }[]> {
    const body = (await (await fetch(`${this.url}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string; lastError: string; scrapeUrl: string }[] } };
    return body.data.activeTargets;
  }

  /** Loaded rule groups with each rule's health ("ok", "err", "unknown") and last error. */
  async rules(): Promise<{ name: string; health: string; lastError?: string; type: string }[]> {
    const body = (await (await fetch(`${this.url}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string; type: string }[] }[] } };
    return body.data.groups.flatMap((g) => g.rules);
  }

  /** Polls until `check` holds, failing with Prometheus's own log if it exited. */
  async waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`prometheus exited with ${this.proc.exitCode}: ${this.log}`);
      if (await check()) return;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; prometheus log:\n${this.log}`);
      await Bun.sleep(100);
    }
  }

  async stop(): Promise<void> {
    this.proc.kill();
    await this.proc.exited;
  }
}
