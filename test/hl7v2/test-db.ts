/** Opens the databases the HL7 v2 suites run against: in-memory PGlite always, PostgreSQL when TEST_DATABASE_URL is set. */
import pg from 'pg';
import { openDatabase } from '../../src/db/open.js';
import { migrate } from '../../src/db/migrate.js';
import type { Database } from '../../src/db/database.js';

export interface TestDb {
  db: Database;
  close(): Promise<void>;
}

export const DB_KINDS: ('pglite' | 'postgres')[] = process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];

export async function openTestDb(kind: 'pglite' | 'postgres'): Promise<TestDb> {
  if (kind === 'pglite') {
    const db = await openDatabase({ dataDir: null });
    await migrate(db);
    return { db, close: () => db.close() };
  }
  // A schema of its own, so that parallel suites on one PostgreSQL do not see each other's rows.
  const base = process.env.TEST_DATABASE_URL!;
  const schema = `t_hl7_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const url = new URL(base);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const db = await openDatabase({ databaseUrl: url.toString(), dataDir: null });
  await migrate(db);
  return {
    db,
    close: async () => {
      await db.close();
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    },
  };
}
