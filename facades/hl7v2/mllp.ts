/**
 * MLLP framing (HL7 v2 ch. C.4): <VT 0x0B> message <FS 0x1C><CR 0x0D>. Used by the inbound listener
 * and, later, by outbound destinations. Bytes outside a frame are discarded and reported, a frame
 * larger than `maxBytes` is dropped whole (reported once), frames may arrive split across chunks or
 * several in one chunk.
 */
export const VT = 0x0b;
export const FS = 0x1c;
export const CR = 0x0d;

export interface MllpEvents {
  frame(payload: Buffer): void;
  /** Bytes seen outside a frame (after a frame's end and before the next VT). */
  garbage?(bytes: Buffer): void;
  /** A frame grew beyond maxBytes; its bytes are skipped up to the next end marker. */
  oversize?(size: number): void;
}

export class MllpDecoder {
  private parts: Buffer[] = [];
  private size = 0;
  private inFrame = false;
  private skipping = false;
  /** A FS was the last byte of the previous chunk: the CR may be the first of the next. */
  private pendingFs = false;

  constructor(
    private readonly events: MllpEvents,
    private readonly maxBytes = 16 * 1024 * 1024,
  ) {}

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (!this.inFrame) {
        const start = chunk.indexOf(VT, i);
        const end = start === -1 ? chunk.length : start;
        if (end > i) {
          const junk = chunk.subarray(i, end);
          // A bare CR/LF after a frame (some senders add one) is not worth a warning.
          if (!junk.every((b) => b === CR || b === 0x0a)) this.events.garbage?.(Buffer.from(junk));
        }
        if (start === -1) return;
        this.inFrame = true;
        this.skipping = false;
        this.parts = [];
        this.size = 0;
        i = start + 1;
        continue;
      }
      if (this.pendingFs) {
        this.pendingFs = false;
        if (chunk[i] === CR) {
          this.finish();
          i++;
          continue;
        }
        // FS not followed by CR: it was data after all.
        this.append(Buffer.from([FS]));
      }
      const fs = chunk.indexOf(FS, i);
      if (fs === -1) {
        this.append(chunk.subarray(i));
        return;
      }
      this.append(chunk.subarray(i, fs));
      if (fs + 1 >= chunk.length) {
        this.pendingFs = true;
        return;
      }
      if (chunk[fs + 1] === CR) {
        this.finish();
        i = fs + 2;
      } else {
        this.append(chunk.subarray(fs, fs + 1));
        i = fs + 1;
      }
    }
  }

  private append(b: Buffer): void {
    if (b.length === 0 || this.skipping) return;
    // A VT inside a frame means the sender restarted (lost the previous end): start over.
    const vt = b.lastIndexOf(VT);
    if (vt !== -1) {
      const lost = Buffer.concat([...this.parts, b.subarray(0, vt)]);
      if (lost.length > 0) this.events.garbage?.(lost);
      this.parts = [];
      this.size = 0;
      b = b.subarray(vt + 1);
    }
    this.size += b.length;
    if (this.size > this.maxBytes) {
      this.skipping = true;
      this.events.oversize?.(this.size);
      this.parts = [];
      return;
    }
    this.parts.push(Buffer.from(b));
  }

  private finish(): void {
    this.inFrame = false;
    if (this.skipping) {
      this.skipping = false;
      return;
    }
    const payload = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    this.events.frame(payload);
  }

  /** Bytes of an unfinished frame (for a log line when the connection closes mid-frame). */
  get pendingBytes(): number {
    return this.inFrame ? this.size : 0;
  }
}

export function frame(message: string | Buffer): Buffer {
  const body = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  const out = Buffer.allocUnsafe(body.length + 3);
  out[0] = VT;
  body.copy(out, 1);
  out[body.length + 1] = FS;
  out[body.length + 2] = CR;
  return out;
}
