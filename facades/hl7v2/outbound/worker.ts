/**
 * One destination's delivery loop in this process: claim due rows (each the head of its patient lane),
 * build, fix the bytes, send over the reused MLLP connection, record the outcome. Any number of these
 * loops (in this and other processes) may serve the same destination; the claim keeps them apart.
 *
 *  AA (or CA)          → delivered
 *  AE / AR (CE / CR)   → dead at once, the ACK kept (resending will not fix an application error)
 *  no connection, timeout, dropped link, garbled ACK → queued again with exponential backoff and jitter
 *  build error (resource gone, no results) → dead with the error
 */
import type { Database } from '../../../src/index.js';
import type { Logger } from '../../../src/index.js';
import type { Repository } from '../../../src/index.js';
import { recordMessage } from '../../../src/index.js';
import { AckProtocolError, readAck } from './ack.js';
import { buildMessage, BuildError, withControlId } from './build.js';
import { statusesOf, type Destination, type RetryPolicy } from './destinations.js';
import { MllpClient, MllpTransportError } from './mllp-client.js';
import { claim, finish, release, savePayload, type Outcome, type OutboxRow } from './outbox.js';
import { dialectFor, type Dialect } from './profiles.js';
import { ConfluxError } from '../../../src/index.js';

export interface WorkerOptions {
  pollMs: number;
  batch: number;
  connectTimeoutMs: number;
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random, so retries spread out. */
export function backoffMs(attempt: number, p: RetryPolicy, random = Math.random): number {
  const exp = Math.min(p.maxDelayMs, p.initialDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

export class DestinationWorker {
  private client: MllpClient;
  private dialect: Dialect;
  private running = false;
  private loop?: Promise<void>;
  private wakeUp?: () => void;
  private quickPolls = 0;
  /** Consecutive transport failures: the whole destination waits, not just one row. */
  private failures = 0;
  private holdUntil = 0;
  /**
   * `passes` counts the worker loop's turns (a claim, a wait while paused or held): proof that the worker looked,
   * for whoever must tell "nothing to send" from "not looked yet" (the tests).
   */
  readonly stats = { delivered: 0, dead: 0, retried: 0, passes: 0 };

  constructor(
    private dest: Destination,
    private readonly db: Database,
    private readonly repo: Repository,
    private readonly log: Logger,
    private readonly opts: WorkerOptions,
  ) {
    this.dialect = dialectFor(dest.profile, dest.options);
    this.client = this.newClient();
  }

  private newClient(): MllpClient {
    return new MllpClient({ host: this.dest.host, port: this.dest.port, tls: this.dest.tls, connectTimeoutMs: this.opts.connectTimeoutMs, idleMs: 120_000 });
  }

  get name(): string {
    return this.dest.name;
  }

  /** New settings from the table; a changed address or TLS setting means a new connection. */
  update(dest: Destination): void {
    const addressChanged = dest.host !== this.dest.host || dest.port !== this.dest.port || JSON.stringify(dest.tls) !== JSON.stringify(this.dest.tls);
    const resumed = this.dest.paused && !dest.paused;
    this.dest = dest;
    this.dialect = dialectFor(dest.profile, dest.options);
    if (addressChanged) {
      this.client.close();
      this.client = this.newClient();
      this.holdUntil = 0;
    }
    if (resumed || addressChanged) this.wake();
  }

  /** A write in this process queued something: look soon, and a few times, since the writer commits after the hook. */
  wake(): void {
    this.quickPolls = 3;
    this.wakeUp?.();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run().catch((err) => this.log.error(`outbound ${this.dest.name}: worker stopped: ${(err as Error).stack ?? err}`));
  }

  /** Finishes the message in flight (bounded by the ACK timeout), gives back unsent claims, closes. */
  async stop(): Promise<void> {
    this.running = false;
    this.wakeUp?.();
    await this.loop;
    this.client.close();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wakeUp = done;
    });
  }

  private leaseMs(): number {
    return this.dest.ackTimeoutMs + this.opts.connectTimeoutMs + 30_000;
  }

  private async run(): Promise<void> {
    while (this.running) {
      this.stats.passes++;
      if (this.dest.paused) {
        await this.sleep(this.opts.pollMs);
        continue;
      }
      const wait = this.holdUntil - Date.now();
      if (wait > 0) {
        await this.sleep(wait);
        continue;
      }
      let rows: OutboxRow[];
      try {
        // One exchange's lease for the batch, renewed per row as it is sent (savePayload): rows a dead process held come back
        // within a minute or so, not after a whole batch's worth of timeouts; a row whose lease ran out is skipped here.
        rows = await claim(this.db, this.dest.name, this.opts.batch, this.leaseMs());
      } catch (err) {
        if (!this.running) break;
        this.log.error(`outbound ${this.dest.name}: claim failed: ${(err as Error).message}`);
        await this.sleep(this.opts.pollMs * 4);
        continue;
      }
      if (rows.length === 0) {
        const quick = this.quickPolls > 0;
        if (quick) this.quickPolls--;
        await this.sleep(quick ? 10 * 3 ** (2 - this.quickPolls) : this.opts.pollMs);
        continue;
      }
      for (let i = 0; i < rows.length; i++) {
        if (!this.running || this.dest.paused || this.holdUntil > Date.now()) {
          // Rows not released go back to the queue when their lease runs out; releasing only makes that sooner.
          await release(this.db, rows.slice(i)).catch((err: Error) => this.log.warn(`outbound ${this.dest.name}: claimed rows not released (${err.message}); they return when their lease ends`));
          break;
        }
        await this.deliver(rows[i]!);
      }
    }
  }

  private async deliver(row: OutboxRow): Promise<void> {
    const d = this.dialect;
    let payload = row.payload;
    let controlId = row.controlId;
    let messageType = row.messageType ?? '';
    try {
      if (!payload || !controlId) {
        controlId = `${d.controlIdPrefix}${row.id}`;
        if (payload) payload = withControlId(payload, controlId);
        else {
          const built = await buildMessage(this.repo, row, d, controlId, statusesOf(this.dest));
          payload = built.text;
          messageType = built.messageType;
        }
      }
    } catch (err) {
      if (!(err instanceof BuildError)) this.log.error(`outbound ${this.dest.name}: building row ${row.id}: ${(err as Error).stack ?? err}`);
      await this.record(row, { state: 'dead', error: `cannot build the message: ${(err as Error).message}`, attempted: false }, null, null, messageType);
      return;
    }
    // Fixes the bytes and renews the lease in one statement; false means another worker took the row over.
    const mine = await savePayload(this.db, row, payload, controlId, messageType, this.leaseMs());
    if (!mine) return;
    let outcome: Outcome;
    try {
      const ackText = await this.client.send(payload, this.dest.ackTimeoutMs);
      const ack = readAck(ackText, controlId);
      this.failures = 0;
      if (ack.code === 'AA') outcome = { state: 'delivered', ack: ack.raw, ackCode: 'AA', attempted: true };
      else outcome = { state: 'dead', ack: ack.raw, ackCode: ack.code, error: `${ack.code}${ack.text ? `: ${ack.text}` : ''}`, attempted: true };
    } catch (err) {
      if (!(err instanceof MllpTransportError) && !(err instanceof AckProtocolError)) throw err;
      if (err instanceof AckProtocolError) this.client.close();
      outcome = this.retryOutcome(row, err.message);
    }
    await this.record(row, outcome, payload, controlId, messageType);
  }

  private retryOutcome(row: OutboxRow, error: string): Outcome {
    this.failures++;
    const attempt = row.attempts + 1;
    const max = this.dest.retry.maxAttempts;
    if (max > 0 && attempt >= max) return { state: 'dead', error: `gave up after ${attempt} attempts: ${error}`, attempted: true };
    const delay = backoffMs(Math.max(attempt, this.failures), this.dest.retry);
    this.holdUntil = Date.now() + delay;
    this.stats.retried++;
    this.log.warn(`outbound ${this.dest.name}: row ${row.id} attempt ${attempt} failed (${error}); retrying in ${delay} ms`);
    return { state: 'queued', error, retryAt: new Date(Date.now() + delay), attempted: true };
  }

  /** The outcome and, for a final one, the message log entry, in one transaction. */
  private async record(row: OutboxRow, o: Outcome, payload: string | null, controlId: string | null, messageType: string): Promise<void> {
    const final = o.state === 'delivered' || o.state === 'dead';
    await this.db.transaction(async (tx) => {
      let logId: string | null = null;
      if (final) {
        logId = await recordMessage(tx, {
          channel: 'mllp',
          direction: 'out',
          raw: payload ?? '',
          sender: `${this.dialect.sendingApplication}^${this.dialect.sendingFacility}`,
          receiver: this.dest.name,
          remoteAddress: `${this.dest.host}:${this.dest.port}`,
          controlId,
          messageType: messageType || null,
          version: this.dialect.version,
          status: o.state === 'delivered' ? 'processed' : 'error',
          error: o.error ?? null,
          ack: o.ack ?? null,
          resourceRefs: [row.groupKey],
          patientRefs: row.patientKey.startsWith('Patient/') ? [row.patientKey] : [],
        });
      }
      const ok = await finish(tx, row, { ...o, messageLogId: logId });
      // Taken over by another worker after our lease ran out: its outcome stands, ours is dropped.
      if (!ok) throw new LostClaim(`row ${row.id} was taken over by another worker`);
    }).catch((err) => {
      if (!(err instanceof LostClaim)) throw err;
      this.log.warn(`outbound ${this.dest.name}: row ${row.id} was taken over by another worker; outcome ${o.state} not recorded`);
    });
    if (o.state === 'delivered') this.stats.delivered++;
    if (o.state === 'dead') {
      this.stats.dead++;
      this.log.warn(`outbound ${this.dest.name}: row ${row.id} is a dead letter: ${o.error}`);
    }
  }
}

class LostClaim extends ConfluxError {
  constructor(message: string) {
    super('cancelled', message);
  }
}
