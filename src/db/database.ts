/**
 * One database interface, two implementations: node-postgres (DATABASE_URL) and PGlite (embedded).
 * Everything above this module speaks only `Queryable` / `Database`, so SQL is written once.
 */
export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Runs several `;`-separated statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

/** A connection inside an open transaction. */
export type Tx = Queryable;

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Runs `fn` in one transaction; commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * Streams the rows of a query in batches without holding the whole result in memory
   * (a server-side cursor on PostgreSQL; LIMIT/OFFSET-free keyset pages are the caller's job on PGlite).
   */
  cursor<R = Record<string, unknown>>(sql: string, params: unknown[], batchSize: number): AsyncIterable<R[]>;
  close(): Promise<void>;
}
