import { PGlite, types } from '@electric-sql/pglite';
import type { Database, QueryResult, Tx } from './database.js';

/**
 * Embedded PostgreSQL (WASM). One connection: PGlite serialises queries itself, and a transaction
 * holds that connection until it ends, so long reads use WITH HOLD cursors instead of a transaction.
 */
export class PgliteDatabase implements Database {
  readonly kind = 'pglite' as const;
  private constructor(private readonly db: PGlite) {}

  /** `dataDir` undefined → in-memory (tests). */
  static async open(dataDir?: string): Promise<PgliteDatabase> {
    const db = new PGlite(dataDir, { parsers: { [types.INT8]: (v: string) => Number(v) } });
    await db.waitReady;
    return new PgliteDatabase(db);
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
      await this.db.query(`CLOSE ${name}`).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
