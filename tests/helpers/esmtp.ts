// One ESMTP transaction with exact command lines (parameters included) and exact message
// bytes, dot-stuffed on the way as RFC 5321 4.5.2 says, for tests that need what nodemailer
// would not send (BODY=, SMTPUTF8 with raw UTF-8 headers, NOTIFY/ORCPT per recipient).

import { expect } from "bun:test";
import { SmtpTalk, type Reply } from "./smtp-talk.ts";

/** RFC 5321 4.5.2: a line that starts with "." gets one more. */
export function dotStuff(message: Buffer): Buffer {
  const text = message.toString("latin1");
  return Buffer.from((text.startsWith(".") ? "." : "") + text.replace(/\r\n\./g, "\r\n.."), "latin1");
}

export interface Transaction {
  /** "MAIL FROM:<a@b> BODY=8BITMIME" */
  readonly mail: string;
  /** "RCPT TO:<c@d> NOTIFY=SUCCESS" each */
  readonly rcpts: readonly string[];
  /** The message, CRLF line ends, not yet dot-stuffed. */
  readonly message: Buffer;
}

/** Runs the transaction and returns the final reply; every earlier step must succeed. */
export async function transact(port: number, t: Transaction, ehlo = "client.test"): Promise<Reply> {
  const { talk } = await SmtpTalk.open(port);
  try {
    expect((await talk.send(`EHLO ${ehlo}`)).code).toBe(250);
    const mail = await talk.send(t.mail);
    expect(`${mail.code} ${mail.text}`).toStartWith("250");
    for (const r of t.rcpts) {
      const rcpt = await talk.send(r);
      expect(`${rcpt.code} ${rcpt.text} (${r})`).toStartWith("250");
    }
    expect((await talk.send("DATA")).code).toBe(354);
    const body = dotStuff(t.message);
    talk.write(Buffer.concat([body, Buffer.from(body.subarray(-2).toString() === "\r\n" ? ".\r\n" : "\r\n.\r\n")]));
    return await talk.reply();
  } finally {
    talk.close();
  }
}

/** The bytes at a sink after the relay's own trace field (the Received: it adds on top). */
export function afterTrace(raw: Buffer): Buffer {
  const text = raw.toString("latin1");
  expect(text).toStartWith("Received: from ");
  // The trace field is folded: its continuation lines start with whitespace.
  const end = text.search(/\r\n(?![ \t])/);
  return raw.subarray(end + 2);
}
