// The retry schedule: after the n-th failed attempt the next one waits schedule[n-1];
// once the schedule is used up the recipient fails permanently (RFC 5321 4.5.4.1).

export function nextAttemptAt(schedule: readonly number[], failedAttempts: number, now: number): number | null {
  const delay = schedule[failedAttempts - 1];
  return delay === undefined ? null : now + delay;
}
