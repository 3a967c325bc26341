/**
 * ASTM E1381 / CLSI LIS1-A low-level protocol on the host's side of the line. Receiving: the instrument
 * establishes a session with ENQ, sends frames, and ends with EOT; the host answers ACK or NAK. Sending
 * (answers to host queries): queued with `transmit`, sent when the line is neutral, as the sender of E1381.
 *
 * - Frames end with CR LF after the checksum as LIS1-A says, or with CR alone or LF alone as some analyzers do.
 * - A frame with a bad checksum, a bad frame number or a broken layout is NAKed; the sender retransmits
 *   (up to 6 times, then gives up with EOT — its side of the contract).
 * - A frame whose number is the previous one again is a retransmission after a lost ACK: ACKed, dropped.
 * - Commit, then acknowledge: the frame that completes a message (ends the L record) is ACKed only
 *   after `onMessage` resolved (message logged, results filed or held); if that fails it is NAKed so the
 *   instrument retransmits it and the message is processed again (filing is idempotent).
 * - Receiver timeout (30 s without a frame or EOT): the incomplete message is handed to `onIncomplete`
 *   (kept in the message log as an error, never filed) and the link returns to neutral.
 * - Contention: when the instrument answers the host's ENQ with its own, the instrument wins, as LIS1-A wants:
 *   its session is received first and the host's transmission is tried again after it (at most 3 times).
 */
import { ACK, CR, ENQ, EOT, ETB, ETX, LF, NAK, STX, checksum } from './frame.js';
import { type Line, type SendResult, sendSession } from './sender.js';

export interface ReceivedMessage {
  /** Text of the records (frame texts joined). */
  text: string;
  /** The frames as received, STX … line end, retransmissions excluded. */
  raw: Buffer;
}

export interface AstmReceiverOptions {
  write(bytes: Buffer): void;
  onMessage(m: ReceivedMessage): Promise<void>;
  /** A session that ended (EOT, timeout) with records after the last complete message. */
  onIncomplete(m: ReceivedMessage, reason: string): Promise<void> | void;
  /** Bytes outside a session that are not ENQ (a device speaking another protocol). */
  onNoise?(bytes: Buffer): void;
  /** A failure while handling received bytes (default: a warning on stderr); the receiver goes on. */
  onError?(err: unknown): void;
  /** LIS1-A receiver timeout: 30 s. */
  receiveTimeoutMs?: number;
  /** Largest frame accepted (some analyzers exceed the 247-byte limit, e.g. histograms). */
  maxFrameBytes?: number;
  /** Refuse sessions (NAK the ENQ) while true, e.g. when the database is down. */
  busy?: () => boolean;
  /** LIS1-A sender timeout for an ACK/NAK: 15 s. */
  replyTimeoutMs?: number;
}

type State = 'idle' | 'session' | 'transmit';

interface Transmission {
  frames: Buffer[];
  attempts: number;
  done(r: SendResult): void;
}

export class AstmReceiver {
  private state: State = 'idle';
  private frame: number[] | null = null;
  /** Index of ETX/ETB in `frame`, -1 until it arrived. */
  private termAt = -1;
  private expectedFn = 1;
  private lastFn = -1;
  private text = '';
  private raw: Buffer[] = [];
  private timer: NodeJS.Timeout | undefined;
  private noise: number[] = [];
  private chain: Promise<void> = Promise.resolve();
  private outbox: Transmission[] = [];
  /** While transmitting: the peer's bytes (ACK, NAK, EOT, ENQ) for the sender. */
  private reply: { queue: number[]; waiter?: (b: number) => void } | undefined;
  readonly stats = { sessions: 0, frames: 0, naks: 0, retransmissions: 0, messages: 0, incomplete: 0, sent: 0 };

  constructor(private readonly opts: AstmReceiverOptions) {}

  /** Feeds bytes from the line. Processing is serialised: bytes wait while a message is being committed. */
  feed(chunk: Buffer): void {
    // One failed step (a callback that could not log an incomplete session) must not stop the line: say so, go on.
    this.chain = this.chain.then(() => this.consume(chunk)).catch((err: unknown) => (this.opts.onError ?? warn)(err));
  }

  /** Resolves when everything fed so far has been handled. */
  idle(): Promise<void> {
    return this.chain;
  }

  /**
   * Queues frames for the instrument (e.g. the answer to its query); they go out once the line is neutral (after
   * the instrument's EOT). Resolves with the outcome; never await it from `onMessage` (that session must end first).
   */
  transmit(frames: Buffer[]): Promise<SendResult> {
    return new Promise((done) => {
      this.outbox.push({ frames, attempts: 0, done });
      this.chain = this.chain.then(() => this.startTransmission());
    });
  }

  /** Starts the next queued transmission when the line is neutral; runs beside the byte chain, which feeds it replies. */
  private startTransmission(): void {
    if (this.state !== 'idle' || this.outbox.length === 0) return;
    const job = this.outbox.shift()!;
    this.state = 'transmit';
    const reply: { queue: number[]; waiter?: (b: number) => void } = { queue: [] };
    this.reply = reply;
    const line: Line = {
      write: (b) => this.opts.write(b),
      nextByte: (ms) =>
        new Promise((resolve) => {
          if (reply.queue.length) return resolve(reply.queue.shift()!);
          const t = setTimeout(() => {
            reply.waiter = undefined;
            resolve(null);
          }, ms);
          reply.waiter = (b) => {
            clearTimeout(t);
            reply.waiter = undefined;
            resolve(b);
          };
        }),
    };
    void sendSession(line, job.frames, { replyTimeoutMs: this.opts.replyTimeoutMs ?? 15_000 }).then((r) => {
      this.chain = this.chain.then(() => this.afterTransmission(job, r, reply.queue));
    });
  }

  private async afterTransmission(job: Transmission, r: SendResult, leftover: number[]): Promise<void> {
    this.reply = undefined;
    this.state = 'idle';
    if (r.contention) {
      // The instrument bid for the line at the same time: it goes first, we try again after its session.
      job.attempts++;
      if (job.attempts < 3) this.outbox.unshift(job);
      else job.done(r);
      this.startSession();
      this.opts.write(Buffer.from([ACK]));
    } else {
      if (r.ok) this.stats.sent++;
      job.done(r);
    }
    // Bytes that came after the sender's last reply (an ENQ right after our EOT) belong to the receiver.
    if (leftover.length) await this.consume(Buffer.from(leftover));
    this.startTransmission();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.noiseTimer) clearTimeout(this.noiseTimer);
    this.timer = undefined;
    this.noiseTimer = undefined;
  }

  private async consume(chunk: Buffer): Promise<void> {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.state === 'transmit') {
        const reply = this.reply!;
        if (reply.waiter) reply.waiter(b);
        else reply.queue.push(b);
        continue;
      }
      if (this.state === 'idle') {
        if (b === ENQ) {
          this.flushNoise();
          if (this.opts.busy?.()) {
            this.opts.write(Buffer.from([NAK]));
            continue;
          }
          this.startSession();
          this.opts.write(Buffer.from([ACK]));
        } else if (b !== EOT && b !== ACK && b !== NAK) {
          this.noise.push(b);
          if (b === LF || b === ETX || this.noise.length >= 65536) this.flushNoise();
          else this.armNoise();
        }
        continue;
      }
      // In a session.
      if (this.frame === null) {
        if (b === STX) {
          this.frame = [STX];
          this.termAt = -1;
          this.arm();
        } else if (b === EOT) {
          await this.endSession('the instrument ended the session (EOT) before the L record');
        } else if (b === ENQ) {
          // The sender restarted: whatever was pending is incomplete.
          await this.endSession('the instrument restarted the session (ENQ) before the L record', false);
          this.startSession();
          this.opts.write(Buffer.from([ACK]));
        }
        continue;
      }
      // The frame's end is found from its structure (ETX/ETB, two checksum characters, one line end),
      // not from CR LF: analyzers send CR LF, CR alone or LF alone there, and CR also ends every record
      // inside the text. The state lives in the receiver, so any split of the bytes across reads works.
      if (this.termAt >= 0 && this.frame.length === this.termAt + 3) {
        if (b !== CR && b !== LF) {
          // No line end after the checksum: a broken frame. Handle the byte afresh (it may be STX or EOT).
          this.frame = null;
          this.nak();
          i--;
          continue;
        }
        this.frame.push(b);
        // CR LF in the same read: the LF belongs to this frame's raw bytes. A LF arriving in a later read
        // is skipped between frames like any other byte outside STX … line end.
        if (b === CR && chunk[i + 1] === LF) this.frame.push(chunk[++i]);
        const bytes = Buffer.from(this.frame);
        const end = this.termAt;
        this.frame = null;
        await this.onFrame(bytes, end);
        continue;
      }
      if (this.termAt >= 0 && (b === CR || b === LF)) {
        // A line end where a checksum character belongs: the frame is over, and broken.
        this.frame = null;
        this.nak();
        continue;
      }
      this.frame.push(b);
      if (this.frame.length > (this.opts.maxFrameBytes ?? 65536)) {
        this.frame = null;
        this.nak();
        continue;
      }
      if (this.termAt < 0 && (b === ETX || b === ETB)) this.termAt = this.frame.length - 1;
    }
  }

  private startSession(): void {
    this.state = 'session';
    this.stats.sessions++;
    this.expectedFn = 1;
    this.lastFn = -1;
    this.text = '';
    this.raw = [];
    this.frame = null;
    this.arm();
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.chain = this.chain.then(() =>
        this.endSession(`no frame or EOT for ${(this.opts.receiveTimeoutMs ?? 30_000) / 1000} s (receiver timeout)`),
      );
    }, this.opts.receiveTimeoutMs ?? 30_000);
    this.timer.unref?.();
  }

  /** Back to neutral (EOT, timeout); then a queued transmission may go, unless the instrument restarts at once. */
  private async endSession(reason: string, thenTransmit = true): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.state !== 'session') return;
    this.state = 'idle';
    const pending = Buffer.concat(this.raw);
    if (this.text.trim() !== '' || this.frame) {
      this.stats.incomplete++;
      await this.opts.onIncomplete({ text: this.text, raw: this.frame ? Buffer.concat([pending, Buffer.from(this.frame)]) : pending }, reason);
    }
    this.text = '';
    this.raw = [];
    this.frame = null;
    if (thenTransmit) this.startTransmission();
  }

  private nak(): void {
    this.stats.naks++;
    this.opts.write(Buffer.from([NAK]));
  }

  /** `bytes` is STX FN text ETB|ETX C1 C2 and the line end (CR LF, CR or LF); `end` indexes ETB|ETX. */
  private async onFrame(bytes: Buffer, end: number): Promise<void> {
    this.arm();
    this.stats.frames++;
    const term = bytes[end];
    const fnByte = bytes[1];
    if (end < 2 || fnByte < 0x30 || fnByte > 0x37) return this.nak();
    const cs = bytes.subarray(end + 1, end + 3).toString('latin1').toUpperCase();
    if (checksum(bytes, 1, end + 1) !== cs) return this.nak();
    const fn = fnByte - 0x30;
    if (fn === this.lastFn) {
      // Our ACK was lost and the sender repeats the frame we already have.
      this.stats.retransmissions++;
      this.opts.write(Buffer.from([ACK]));
      return;
    }
    if (fn !== this.expectedFn) return this.nak();
    const text = bytes.subarray(2, end).toString('latin1');
    const completes = term === ETX && /(^|\r)L[^\r]*\r?$/.test(this.text + text);
    if (!completes) {
      this.accept(fn, text, bytes);
      this.opts.write(Buffer.from([ACK]));
      return;
    }
    const message = { text: this.text + text, raw: Buffer.concat([...this.raw, bytes]) };
    try {
      await this.opts.onMessage(message);
    } catch {
      // Not committed: NAK, so the instrument sends this frame again and we retry the whole message.
      return this.nak();
    }
    this.stats.messages++;
    this.accept(fn, '', bytes);
    this.text = '';
    this.raw = [];
    this.opts.write(Buffer.from([ACK]));
  }

  private accept(fn: number, text: string, bytes: Buffer): void {
    this.lastFn = fn;
    this.expectedFn = (fn + 1) % 8;
    this.text += text;
    if (text) this.raw.push(bytes);
  }

  private noiseTimer: NodeJS.Timeout | undefined;
  private armNoise(): void {
    if (this.noiseTimer) return;
    this.noiseTimer = setTimeout(() => {
      this.noiseTimer = undefined;
      this.chain = this.chain.then(() => this.flushNoise());
    }, 1000);
    this.noiseTimer.unref?.();
  }

  private flushNoise(): void {
    if (this.noiseTimer) clearTimeout(this.noiseTimer);
    this.noiseTimer = undefined;
    if (this.noise.length === 0) return;
    const bytes = Buffer.from(this.noise);
    this.noise = [];
    // Line ends alone are not a transmission.
    if (bytes.every((b) => b === CR || b === LF || b === 0x20)) return;
    this.opts.onNoise?.(bytes);
  }
}

function warn(err: unknown): void {
  console.warn(`[astm] receiving failed: ${err instanceof Error ? err.message : String(err)}`);
}
