/**
 * Searches and history on a streaming replica (DATABASE_READ_URL), with read-your-writes: a caller that has written
 * reads from the replica only once the replica has replayed past the primary's WAL position taken after that write
 * (`pg_current_wal_lsn()` on the primary, compared with `pg_last_wal_replay_lsn()` on the replica). A replica that does
 * not catch up within DATABASE_READ_MAX_WAIT_MS, or cannot be reached, is passed over: the read goes to the primary.
 * Callers that have not written since the replica last caught up for them read from the replica at once.
 */
import type { Database, Queryable } from './database.js';

export class ReadRouting {
  /** Callers (AccessPolicy.actor) with a write the replica is not yet known to have, and when they wrote. */
  private readonly pending = new Map<string, number>();

  constructor(
    private readonly primary: Database,
    readonly replica: Database,
    private readonly maxWaitMs: number,
    private readonly log: (msg: string) => void = (m) => console.error(m),
  ) {}

  noteWrite(actor: string): void {
    this.pending.set(actor, Date.now());
  }

  /** Where `actor` reads: the replica, or the primary while the replica has not caught up with the actor's writes. */
  async forRead(actor: string): Promise<Queryable> {
    const since = this.pending.get(actor);
    if (since === undefined) return this.replica;
    try {
      const { lsn } = (await this.primary.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0];
      if (!(await this.caughtUp(lsn))) return this.primary;
      // Forget the write only if no newer one came meanwhile (that one may be past `lsn`).
      if (this.pending.get(actor) === since) this.pending.delete(actor);
      return this.replica;
    } catch (err) {
      this.log(`[db] read replica unavailable, reading from the primary: ${(err as Error).message}`);
      return this.primary;
    }
  }

  /**
   * A reader with everything committed on the primary until now (an export's cut): the replica once it has replayed
   * that far, else — not caught up in time, or unreachable — the primary.
   */
  async caughtUpNow(): Promise<Database> {
    try {
      const { lsn } = (await this.primary.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0];
      if (await this.caughtUp(lsn)) return this.replica;
    } catch (err) {
      this.log(`[db] read replica unavailable, exporting from the primary: ${(err as Error).message}`);
    }
    return this.primary;
  }

  private async caughtUp(lsn: string): Promise<boolean> {
    const end = Date.now() + this.maxWaitMs;
    for (;;) {
      const r = await this.replica.query<{ ok: boolean | null }>('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [lsn]);
      if (r.rows[0]?.ok) return true;
      if (Date.now() >= end) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}
