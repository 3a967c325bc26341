/**
 * ASTM E1381 sender (the instrument side): ENQ, frames one at a time waiting for ACK, NAK → retransmit
 * (at most 6 times, then EOT), EOT at the end. Used by the tests and the benchmark to play an analyzer
 * over a real serial line, and usable for host → instrument downloads.
 */
import { ACK, ENQ, EOT, NAK } from './frame.js';

export interface Line {
  write(bytes: Buffer): void;
  /** Resolves with the next byte the peer sends, or null after `timeoutMs`. */
  nextByte(timeoutMs: number): Promise<number | null>;
}

export interface SendOptions {
  /** LIS1-A: 15 s for an ACK/NAK. */
  replyTimeoutMs?: number;
  maxRetransmissions?: number;
  /** Change a frame's bytes on its first transmission (tests: corrupt a checksum). */
  mangle?: (frameIndex: number, attempt: number, frame: Buffer) => Buffer;
  /** Stop after this many frames without EOT (tests: an analyzer that dies mid-session). */
  stopAfterFrames?: number;
}

export interface SendResult {
  ok: boolean;
  naks: number;
  error?: string;
  /** The peer answered our ENQ with its own ENQ: it wants the line, and an instrument has priority. */
  contention?: boolean;
}

export async function sendSession(line: Line, frames: Buffer[], opts: SendOptions = {}): Promise<SendResult> {
  const timeout = opts.replyTimeoutMs ?? 15_000;
  const maxRetx = opts.maxRetransmissions ?? 6;
  let naks = 0;
  line.write(Buffer.from([ENQ]));
  const first = await line.nextByte(timeout);
  if (first === ENQ) return { ok: false, naks, error: 'line contention (the peer sent ENQ too)', contention: true };
  if (first !== ACK) return { ok: false, naks, error: first === NAK ? 'receiver busy (NAK to ENQ)' : `no ACK to ENQ (got ${first})` };
  for (let i = 0; i < frames.length; i++) {
    if (opts.stopAfterFrames !== undefined && i >= opts.stopAfterFrames) return { ok: false, naks, error: 'stopped mid-session' };
    let attempt = 0;
    for (;;) {
      const bytes = opts.mangle ? opts.mangle(i, attempt, frames[i]) : frames[i];
      line.write(bytes);
      const reply = await line.nextByte(timeout);
      if (reply === ACK) break;
      if (reply === EOT) return { ok: false, naks, error: 'receiver interrupt (EOT)' };
      naks++;
      attempt++;
      if (reply === null || attempt > maxRetx) {
        line.write(Buffer.from([EOT]));
        return { ok: false, naks, error: reply === null ? `no reply to frame ${i}` : `frame ${i} refused ${attempt} times` };
      }
    }
  }
  line.write(Buffer.from([EOT]));
  return { ok: true, naks };
}

/** A Line over a stream (serial port, pty) that queues the bytes it receives. */
export function streamLine(stream: { write(b: Buffer): unknown; on(ev: 'data', fn: (b: Buffer) => void): unknown }): Line {
  const queue: number[] = [];
  let waiter: ((b: number | null) => void) | undefined;
  stream.on('data', (chunk: Buffer) => {
    for (const b of chunk) queue.push(b);
    if (waiter && queue.length) {
      const w = waiter;
      waiter = undefined;
      w(queue.shift() as number);
    }
  });
  return {
    write: (b) => void stream.write(b),
    nextByte(timeoutMs) {
      if (queue.length) return Promise.resolve(queue.shift() as number);
      return new Promise((resolve) => {
        const t = setTimeout(() => {
          waiter = undefined;
          resolve(null);
        }, timeoutMs);
        waiter = (b) => {
          clearTimeout(t);
          resolve(b);
        };
      });
    },
  };
}
