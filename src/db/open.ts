import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Database } from './database.js';
import { PostgresDatabase } from './postgres.js';
import { PgliteDatabase } from './pglite.js';

/** PostgreSQL when a URL is given, otherwise PGlite in `<dataDir>/pglite` (or in memory when dataDir is null). */
export async function openDatabase(opts: { databaseUrl?: string; dataDir: string | null; poolSize?: number }): Promise<Database> {
  if (opts.databaseUrl) return new PostgresDatabase(opts.databaseUrl, opts.poolSize);
  if (opts.dataDir === null) return PgliteDatabase.open();
  const dir = path.resolve(opts.dataDir, 'pglite');
  await mkdir(dir, { recursive: true });
  return PgliteDatabase.open(dir);
}
