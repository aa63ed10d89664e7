// Where a message's header section ends, found a chunk at a time (RFC 5322 2.2): at the
// blank line, or, as Postfix's cleanup does, at the first line that is neither a header
// field ("name:") nor the folded continuation of one; such a line starts the body. Also
// measures each field with its folded lines, for the header size limit. Bytes inside a
// field value are skipped with the native indexOf, so the cost is per line, not per byte.

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

const enum State {
  LineStart,
  Name,
  NameSpace,
  Value,
  BlankCr,
}

/** ftext (RFC 5322 3.6.8): printable ASCII except ":". */
const isFtext = (b: number) => b >= 0x21 && b <= 0x7e && b !== COLON;

export class HeaderScanner {
  private state = State.LineStart;
  private offset = 0;
  private lineStart = 0;
  /** Where the current field started; -1 before the first one. */
  private fieldStart = -1;
  /** Where the header section ends (its blank line included); -1 while unknown. */
  end = -1;
  /** A field (folded lines included) longer than the limit was seen. */
  fieldTooLarge = false;

  constructor(private readonly maxField: number) {}

  /** Scans the next bytes; true once the end is known. */
  push(bytes: Uint8Array): boolean {
    const base = this.offset;
    for (let i = 0; i < bytes.length && this.end === -1; i++) {
      const b = bytes[i]!;
      switch (this.state) {
        case State.LineStart:
          if (b === CR) this.state = State.BlankCr;
          else if (b === LF) this.end = base + i + 1;
          else if ((b === SP || b === HT) && this.fieldStart !== -1) this.state = State.Value;
          else if (isFtext(b)) {
            this.fieldStart = base + i;
            this.state = State.Name;
          } else this.end = this.lineStart;
          break;
        case State.Name:
          if (b === COLON) this.state = State.Value;
          else if (b === SP || b === HT) this.state = State.NameSpace;
          else if (!isFtext(b)) this.end = this.lineStart;
          break;
        case State.NameSpace: // obs-optional: white space before the colon (RFC 5322 4.5.8)
          if (b === COLON) this.state = State.Value;
          else if (b !== SP && b !== HT) this.end = this.lineStart;
          break;
        case State.Value: {
          const lf = bytes.indexOf(LF, i);
          if (lf === -1) {
            i = bytes.length;
            break;
          }
          i = lf;
          this.lineEnded(base + lf + 1);
          break;
        }
        case State.BlankCr:
          this.end = b === LF ? base + i + 1 : this.lineStart;
          break;
      }
    }
    this.offset = base + bytes.length;
    if (this.end === -1 && this.state === State.Value && this.offset - this.fieldStart > this.maxField) this.fieldTooLarge = true;
    return this.end !== -1;
  }

  /** The input ended: a last line that is not (the start of) a field belongs to the body. */
  finish(): void {
    if (this.end !== -1) return;
    this.end = this.state === State.Name || this.state === State.NameSpace || this.state === State.BlankCr ? this.lineStart : this.offset;
  }

  private lineEnded(next: number): void {
    if (next - this.fieldStart > this.maxField) this.fieldTooLarge = true;
    this.lineStart = next;
    this.state = State.LineStart;
  }
}
