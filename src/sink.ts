// `mailraven sink`: a minimal next hop for trying mailraven out. It accepts every message and
// writes it, byte for byte, to DIR/<time>-<n>.eml with the envelope beside it in .json.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SMTPServer } from "smtp-server";
import type { Logger } from "./log.ts";

export async function runSink(host: string, port: number, dir: string, log: Logger): Promise<SMTPServer> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let seq = 0;
  const server = new SMTPServer({
    name: "sink.localhost",
    authOptional: true,
    disabledCommands: ["AUTH"],
    hideSTARTTLS: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const name = `${Date.now()}-${++seq}`;
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
        const to = session.envelope.rcptTo.map((r) => r.address);
        writeFileSync(join(dir, `${name}.eml`), Buffer.concat(chunks), { mode: 0o600 });
        writeFileSync(join(dir, `${name}.json`), JSON.stringify({ from, to }) + "\n", { mode: 0o600 });
        log.info("sink stored message", { file: `${name}.eml`, from, rcpt_count: to.length });
        callback(null, `Stored as ${name}`);
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  log.info("sink listening", { address: host, port, dir });
  return server;
}
