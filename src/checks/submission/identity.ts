// Submission: an authenticated user may only send as the identities granted to them, both in
// the envelope (MAIL FROM, checked at MAIL) and in the From: header (checked after DATA).

import addressparser from "nodemailer/lib/addressparser";
import { parseHeaders } from "../../smtp/headers.ts";
import { mayUse, type UserStore } from "../../users/store.ts";
import { ACCEPT, reject, type Verdict } from "../../verdict.ts";
import type { ContentContext, ContentResult, MailContext } from "../types.ts";

const notOwned = (address: string, user: string) => reject(553, "5.7.1", `Sender address <${address}> is not one of the identities of user ${user}`, "sender identity");

export function senderIdentity(users: UserStore) {
  return (ctx: MailContext): Verdict => {
    const user = ctx.client.user;
    if (user === null) return ACCEPT;
    const identities = users.get(user)?.identities ?? [];
    if (ctx.sender === null) return notOwned("", user);
    return mayUse(identities, ctx.sender.address) ? ACCEPT : notOwned(ctx.sender.address, user);
  };
}

/** Every address in every From: header must be the user's; a message without From: is refused too. */
export function fromIdentity(users: UserStore) {
  return async (ctx: ContentContext): Promise<ContentResult> => {
    const user = ctx.client.user;
    if (user === null) return { verdict: ACCEPT };
    const identities = users.get(user)?.identities ?? [];
    const froms = ctx.head === null ? [] : parseHeaders(ctx.head).fields.filter((f) => f.name.toLowerCase() === "from");
    const addresses = froms.flatMap((f) => flatten(addressparser(f.value)));
    if (addresses.length === 0) return { verdict: reject(553, "5.7.1", "A From: header with your address is required", "sender identity") };
    const foreign = addresses.find((a) => !mayUse(identities, a));
    return { verdict: foreign === undefined ? ACCEPT : notOwned(foreign, user) };
  };
}

type Parsed = ReturnType<typeof addressparser>;
function flatten(list: Parsed): string[] {
  return list.flatMap((a) => ("group" in a && Array.isArray(a.group) ? flatten(a.group as Parsed) : "address" in a && a.address ? [a.address] : []));
}
