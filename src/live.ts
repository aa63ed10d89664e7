// A value that can be replaced while the process runs (the configuration on SIGHUP).
// Holders read it at the moment of use instead of keeping their own copy.

export class Live<T> {
  private listeners: ((next: T, previous: T) => void)[] = [];
  constructor(private value: T) {}

  get(): T {
    return this.value;
  }

  set(next: T): void {
    const previous = this.value;
    this.value = next;
    for (const l of this.listeners) l(next, previous);
  }

  onChange(listener: (next: T, previous: T) => void): void {
    this.listeners.push(listener);
  }
}
