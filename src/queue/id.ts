// Queue ids: time-ordered (so listings and the spool sort by arrival) and random enough that
// two relays never collide. 16 characters of Crockford base32: 9 of milliseconds, 7 random.
// Within one millisecond a generator counts up from its last random tail, so its own ids
// never repeat (a repeat would fail the insert) and keep their order. The queue store owns
// the one generator of a process.

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

export class QueueIdGenerator {
  private lastTime = -1;
  private lastTail: number[] = [];

  next(now = Date.now()): string {
    let time = "";
    for (let t = now, i = 0; i < 9; i++, t = Math.floor(t / 32)) time = ALPHABET[t % 32] + time;
    if (now !== this.lastTime || !increment(this.lastTail)) {
      this.lastTime = now;
      this.lastTail = [...crypto.getRandomValues(new Uint8Array(7))].map((b) => b % 32);
    }
    return time + this.lastTail.map((d) => ALPHABET[d]).join("");
  }
}

function increment(digits: number[]): boolean {
  for (let i = digits.length - 1; i >= 0; i--) {
    if (digits[i]! < 31) {
      digits[i]!++;
      return true;
    }
    digits[i] = 0;
  }
  return false;
}

export const isQueueId = (s: string): boolean => /^[0-9A-HJKMNP-TV-Z]{16}$/.test(s);
