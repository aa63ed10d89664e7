// Queue ids: time-ordered (so `ls` of the spool and the queue listing sort by arrival) and
// random enough that two relays never collide. 16 characters of Crockford base32.

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

export function newQueueId(now = Date.now()): string {
  let time = "";
  for (let t = now, i = 0; i < 9; i++, t = Math.floor(t / 32)) time = ALPHABET[t % 32] + time;
  const rnd = crypto.getRandomValues(new Uint8Array(7));
  let tail = "";
  for (const b of rnd) tail += ALPHABET[b % 32];
  return time + tail;
}

export const isQueueId = (s: string): boolean => /^[0-9A-HJKMNP-TV-Z]{16}$/.test(s);
