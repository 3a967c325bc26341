import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Database, QueryResult, Tx } from './database.js';

// int8 (counts, sequence numbers) as JS numbers: every value we store fits in 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

const statementNames = new Map<string, string>();

/**
 * Parameterised statements become named prepared statements (per connection, by a hash of their text), so
 * PostgreSQL parses and plans the write path's large CTE statements once per connection, not per write.
 */
function toQuery(text: string, values?: unknown[]): pg.QueryConfig {
  if (!values?.length) return { text, values: values as unknown[] };
  let name = statementNames.get(text);
  if (!name) {
    name = `s_${createHash('sha1').update(text).digest('base64url').slice(0, 20)}`;
    if (statementNames.size < 5000) statementNames.set(text, name);
  }
  return { name, text, values: values as unknown[] };
}

export class PostgresDatabase implements Database {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;

  constructor(connectionString: string, max = 20) {
    this.pool = new pg.Pool({ connectionString, max });
    // An idle client that loses its connection must not crash the process.
    this.pool.on('error', (err) => console.error(`[db] idle client error: ${err.message}`));
  }

  async query<R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> {
    const r = await this.pool.query(toQuery(sql, params));
    return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
  }

  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const tx: Tx = {
        query: async <R>(sql: string, params?: unknown[]) => {
          const r = await client.query(toQuery(sql, params));
          return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
        },
        exec: async (sql: string) => {
          await client.query(sql);
        },
      };
      const result = await fn(tx);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      // A ROLLBACK that fails means the connection is gone, which ends the transaction too; the caller needs the
      // error that caused the rollback, not that one.
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async *cursor<R>(sql: string, params: unknown[], batchSize: number): AsyncIterable<R[]> {
    const client = await this.pool.connect();
    const name = `cur_${Math.random().toString(36).slice(2)}`;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await client.query(`DECLARE ${name} NO SCROLL CURSOR FOR ${sql}`, params as unknown[]);
      for (;;) {
        const r = await client.query(`FETCH ${batchSize} FROM ${name}`);
        if (r.rows.length === 0) break;
        yield r.rows as R[];
      }
      await client.query('COMMIT');
    } catch (err) {
      // A ROLLBACK that fails means the connection is gone, which ends the transaction too; the caller needs the
      // error that caused the rollback, not that one.
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
