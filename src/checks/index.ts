// The message pipeline: which checks run at each SMTP stage, in order.
//   connect -> limits and greeting delay (smtp/listener.ts, before a session exists)
//   rcpt    -> relay policy
//   data    -> size, bare newlines, hop count
//   queue   -> queue/store.ts commits; deliver -> deliver/worker.ts

import type { Config } from "../config/types.ts";
import { bareNewline, hopCount, messageSize } from "./data-policy.ts";
import { relayPolicy } from "./relay-policy.ts";
import type { Pipeline } from "./types.ts";

export function buildPipeline(config: Config): Pipeline {
  return {
    rcpt: [relayPolicy(config.relay)],
    data: [messageSize(config.smtp.maxMessageSize), bareNewline, hopCount(config.smtp.maxHops)],
  };
}
