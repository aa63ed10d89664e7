// "The next hop received nothing" only means something once anything queued had its chance to
// be delivered: a canary message sent after the attempts, delivered, and an empty queue.

import { expect } from "bun:test";
import { queueCounts, type Relay, waitFor } from "./relay.ts";
import type { Sink } from "./sink.ts";
import { SmtpTalk } from "./smtp-talk.ts";

export const CANARY_SENDER = "canary@origin.test";

/** Sends the canary (from CANARY_SENDER to `to`) over plain SMTP, or with `send`; waits until `sink` has it and the queue is empty. */
export async function canaryThrough(relay: Relay, sink: Sink, to = "bob@dest.test", send?: () => Promise<number>): Promise<void> {
  const code = send
    ? await send()
    : await (async () => {
        const { talk } = await SmtpTalk.open(relay.port);
        await talk.send("EHLO client.test");
        const r = await talk.transaction(CANARY_SENDER, [to], "Subject: canary\r\n\r\nsent after the attempts\r\n");
        talk.close();
        return r.code;
      })();
  expect(code).toBe(250);
  await waitFor(() => sink.messages.some((m) => m.from === CANARY_SENDER), 10_000, "the canary at the next hop");
  await waitFor(() => queueCounts(relay.dir).messages === 0, 10_000, "an empty queue");
}
