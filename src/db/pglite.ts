import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { PGlite, types } from '@electric-sql/pglite';
import type { Database, QueryResult, Tx } from './database.js';

/**
 * Embedded PostgreSQL (WASM). One connection: PGlite serialises queries itself, and a transaction
 * holds that connection until it ends, so long reads use WITH HOLD cursors instead of a transaction.
 */
export class PgliteDatabase implements Database {
  readonly kind = 'pglite' as const;
  private constructor(
    private readonly db: PGlite,
    private readonly lockFile?: string,
  ) {}

  /** `dataDir` undefined → in-memory (tests). */
  static async open(dataDir?: string): Promise<PgliteDatabase> {
    const lockFile = dataDir ? acquireLock(dataDir) : undefined;
    try {
      const db = new PGlite(dataDir, { parsers: { [types.INT8]: (v: string) => Number(v) } });
      await db.waitReady;
      return new PgliteDatabase(db, lockFile);
    } catch (err) {
      if (lockFile) rmSync(lockFile, { force: true });
      throw err;
    }
  }

  async query<R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> {
    const r = await this.db.query<R>(sql, params as unknown[]);
    return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
  }

  async exec(sql: string): Promise<void> {
    await this.db.exec(sql);
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(async (t) => {
      const tx: Tx = {
        query: async <R>(sql: string, params?: unknown[]) => {
          const r = await t.query<R>(sql, params as unknown[]);
          return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
        },
        exec: async (sql: string) => {
          await t.exec(sql);
        },
      };
      return fn(tx);
    });
  }

  async *cursor<R>(sql: string, params: unknown[], batchSize: number): AsyncIterable<R[]> {
    const name = `cur_${Math.random().toString(36).slice(2)}`;
    // WITH HOLD materialises the result at declaration, so other queries can run between fetches.
    await this.db.query(`DECLARE ${name} NO SCROLL CURSOR WITH HOLD FOR ${sql}`, params as unknown[]);
    try {
      for (;;) {
        const r = await this.db.query<R>(`FETCH ${batchSize} FROM ${name}`);
        if (r.rows.length === 0) break;
        yield r.rows;
      }
    } finally {
      // CLOSE fails only when the cursor is already gone (its declaration or a fetch failed, and that error propagates).
      await this.db.query(`CLOSE ${name}`).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await this.db.close();
    if (this.lockFile) rmSync(this.lockFile, { force: true });
  }
}

/**
 * PGlite is one process's database: two processes opening the same directory corrupt it. A lock file with
 * the owner's pid refuses the second opener with a message that says what to do; a stale lock (its process
 * gone) is taken over.
 */
function acquireLock(dataDir: string): string {
  const file = `${dataDir}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(file, 'utf8'));
      if (owner && owner !== process.pid && isAlive(owner)) {
        throw new Error(
          `the embedded database in ${dataDir} is in use by process ${owner} (a running Conflux server?). ` +
            'Stop it, use the running server (the CLI does so automatically), or use PostgreSQL (DATABASE_URL) to run several processes.',
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock ${dataDir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
