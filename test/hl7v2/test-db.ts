/** Opens the databases the HL7 v2 suites run against: in-memory PGlite always, PostgreSQL when TEST_DATABASE_URL is set. */
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';

export interface TestDb {
  db: Database;
  close(): Promise<void>;
}

export const DB_KINDS: ('pglite' | 'postgres')[] = testDatabases().map((d) => d.name);

/** A fresh migrated database: in-memory PGlite, or a private schema on TEST_DATABASE_URL. */
export async function openTestDb(kind: 'pglite' | 'postgres'): Promise<TestDb> {
  const backend = testDatabases().find((d) => d.name === kind);
  if (!backend) throw new Error(`no ${kind} test database (is TEST_DATABASE_URL set?)`);
  const { db, drop } = await backend.open();
  return { db, close: drop };
}
