// When a client's input is due. Three clocks, checked by one timer on the connection:
//   - command: a command line the client has started must be complete within command_timeout,
//     so a client cannot hold a session by dripping a byte at a time under the idle timeout;
//   - content rate: message content (DATA, or a BDAT transaction) starts with a budget of
//     command_timeout that every byte received tops up by 1/min_data_rate seconds, never above
//     command_timeout ahead (Postfix's smtpd_per_request_deadline with smtpd_min_data_rate):
//     a client must keep sending at about that rate, and may not stall longer than the
//     command timeout;
//   - content total: the whole content must arrive within data_timeout.
// Plain numbers, no timers here: the connection arms one timer for the earliest deadline and,
// when it fires, asks again (top-ups move deadlines later without touching the timer).

export interface ClockLimits {
  readonly commandTimeoutMs: number;
  readonly dataTimeoutMs: number;
  /** Bytes per second; 0: no rate, only the stall limit and the total. */
  readonly minDataRate: number;
}

export type Overdue = "command" | "rate" | "data";

export class InputClock {
  /** When the unfinished command line started; 0 when there is none. */
  private lineSince = 0;
  /** When the message content started; 0 outside content. */
  private contentSince = 0;
  private budgetAt = 0;

  /** `bytes` arrived at `now`; `lineOpen`: they leave a command line unfinished. */
  input(now: number, bytes: number, lineOpen: boolean, limits: ClockLimits): void {
    if (this.contentSince) {
      const topUp = limits.minDataRate > 0 ? (bytes * 1000) / limits.minDataRate : Infinity;
      this.budgetAt = Math.min(now + limits.commandTimeoutMs, this.budgetAt + topUp);
    } else {
      this.lineSince = lineOpen ? this.lineSince || now : 0;
    }
  }

  startContent(now: number, limits: ClockLimits): void {
    this.contentSince = now;
    this.budgetAt = now + limits.commandTimeoutMs;
    this.lineSince = 0;
  }

  stopContent(): void {
    this.contentSince = 0;
  }

  /** The earliest deadline running, or null when the client owes nothing. */
  due(limits: ClockLimits): { at: number; kind: Overdue } | null {
    if (this.contentSince) {
      const total = this.contentSince + limits.dataTimeoutMs;
      return this.budgetAt < total ? { at: this.budgetAt, kind: "rate" } : { at: total, kind: "data" };
    }
    return this.lineSince ? { at: this.lineSince + limits.commandTimeoutMs, kind: "command" } : null;
  }
}
