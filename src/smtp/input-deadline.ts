// The one timer behind a connection's input deadlines. The accounts are kept by InputClock
// (input-clock.ts); this arms a timer for the earliest deadline and, when it fires, asks the
// clock again: input only moves deadlines later, so a top-up never touches the timer. A
// connection makes one of these only once it owes input (a started command line, message
// content), so an idle session carries neither a clock nor a timer.

import { InputClock, type ClockLimits, type Overdue } from "./input-clock.ts";

export interface DeadlineOwner {
  /** The limits in force now (the listener's; shorter under stress). */
  readonly limits: ClockLimits;
  /** The client missed a deadline (content timing has stopped): cut the session. */
  overdue(kind: Overdue): void;
}

export class InputDeadline {
  private readonly clock = new InputClock();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private at = 0;

  constructor(private readonly owner: DeadlineOwner) {}

  /** `bytes` arrived; `lineOpen`: they leave a command line unfinished. */
  input(bytes: number, lineOpen: boolean): void {
    this.clock.input(Date.now(), bytes, lineOpen, this.owner.limits);
    // An armed timer looks again when it fires.
    if (!this.timer) this.arm();
  }

  /** DATA or the first BDAT chunk: the content's rate and total deadlines start. */
  startContent(): void {
    this.clock.startContent(Date.now(), this.owner.limits);
    this.arm();
  }

  contentEnded(): void {
    this.clock.stopContent();
    this.arm(); // usually: nothing due, so the timer goes rather than wait to fire
  }

  /** The session is over. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The timer fired: the client is overdue, or a top-up moved the deadline later. */
  timerFired(): void {
    this.timer = null;
    const due = this.clock.due(this.owner.limits);
    if (!due) return;
    if (due.at > Date.now()) return this.arm();
    this.clock.stopContent();
    this.owner.overdue(due.kind);
  }

  private arm(): void {
    const due = this.clock.due(this.owner.limits);
    if (!due) return this.stop();
    if (this.timer && this.at <= due.at) return; // it fires first and looks again
    this.stop();
    this.at = due.at;
    this.timer = setTimeout(onTimer, Math.max(0, due.at - Date.now()), this);
    this.timer.unref();
  }
}

// A module function, not a closure per arm.
function onTimer(deadline: InputDeadline): void {
  deadline.timerFired();
}
