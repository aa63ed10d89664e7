// A client that pipelines commands and never reads the replies must cost the relay no more
// memory than its buffers: once the replies back up, the session stops reading, TCP pushes
// back, and the flood waits in the client (RFC 2920 5: the server may stop reading while its
// replies are not read). Measured from outside: how much of a 64 MiB flood the client could
// write, and how much the relay's resident memory grew.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { Relay } from "../helpers/relay.ts";

let relay: Relay;
beforeAll(async () => {
  relay = await Relay.start({ config: { relay: { domains: { "dest.test": "smtp://127.0.0.1:9" } } } });
}, 30_000);
afterAll(async () => {
  await relay.stop();
  relay.cleanup();
}, 30_000);

const rssKiB = (pid: number) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"))![1]);
const MiB = 1024 * 1024;

/** Reads until `pattern` has arrived (then stops reading), or fails at the deadline. */
function readUntil(socket: Socket, pattern: RegExp, ms = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = "";
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${ms} ms: ${JSON.stringify(got)}`)), ms);
    const onData = (d: Buffer) => {
      got += d.toString("latin1");
      if (!pattern.test(got)) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.pause();
      resolve();
    };
    socket.on("data", onData);
  });
}

/** Writes `chunk` until `total` bytes went out or the socket stays full for `stallMs`; returns the bytes written. */
async function flood(socket: Socket, chunk: Buffer, total: number, stallMs: number): Promise<number> {
  let written = 0;
  while (written < total) {
    written += chunk.length;
    if (socket.write(chunk)) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => (socket.off("drain", onDrain), resolve(false)), stallMs);
      const onDrain = () => (clearTimeout(timer), resolve(true));
      socket.once("drain", onDrain);
    });
    if (!drained) return written - socket.writableLength;
  }
  return written - socket.writableLength;
}

test("64 MiB of pipelined RSETs from a client that reads no reply: the relay stops reading, the flood stays in the client, memory stays flat", async () => {
  const socket = connect(relay.port, "127.0.0.1");
  socket.on("error", () => {});
  await readUntil(socket, /^220 /m);
  socket.resume();
  socket.write("EHLO flood.test\r\n");
  await readUntil(socket, /^250 /m);
  const before = rssKiB(relay.proc.pid);
  // 64 KiB writes; the client stops reading (paused above), so the relay's replies back up.
  const sent = await flood(socket, Buffer.from("RSET\r\n".repeat(10_923), "latin1"), 64 * MiB, 3000);
  const grown = (rssKiB(relay.proc.pid) - before) / 1024;
  socket.destroy();
  // Loopback socket buffers hold a few MiB in each direction; the rest must never have been read.
  expect(sent).toBeLessThan(24 * MiB);
  expect(grown).toBeLessThan(24);
  // The relay goes on serving others.
  const other = connect(relay.port, "127.0.0.1");
  await readUntil(other, /^220 /m);
  other.destroy();
}, 60_000);
