import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Database } from '../../src/db/database.js';
import { migrate } from '../../src/db/migrate.js';
import { openDatabase } from '../../src/db/open.js';

export interface TestDatabase {
  name: 'pglite' | 'postgres';
  /** A fresh, migrated database (PGlite in memory, or a private schema on TEST_DATABASE_URL). */
  open(): Promise<{ db: Database; url?: string; drop(): Promise<void> }>;
}

/**
 * The backends every integration suite runs against: PGlite always, PostgreSQL when TEST_DATABASE_URL is set.
 * Use with `describe.each(testDatabases())('... on %s', ...)`.
 */
export function testDatabases(): TestDatabase[] {
  const list: TestDatabase[] = [
    {
      name: 'pglite',
      async open() {
        const db = await openDatabase({ dataDir: null });
        await migrate(db);
        return { db, drop: () => db.close() };
      },
    },
  ];
  const url = process.env.TEST_DATABASE_URL;
  if (url) {
    list.push({
      name: 'postgres',
      async open() {
        // A private schema per suite keeps parallel test files from seeing each other's rows.
        const schema = `t_${randomBytes(6).toString('hex')}`;
        const admin = new pg.Client({ connectionString: url });
        await admin.connect();
        await admin.query(`CREATE SCHEMA ${schema}`);
        await admin.end();
        const scopedUrl = withSearchPath(url, schema);
        const db = await openDatabase({ databaseUrl: scopedUrl, dataDir: null });
        await migrate(db);
        return {
          db,
          url: scopedUrl,
          async drop() {
            await db.close();
            const c = new pg.Client({ connectionString: url });
            await c.connect();
            await c.query(`DROP SCHEMA ${schema} CASCADE`);
            await c.end();
          },
        };
      },
    });
  }
  return list;
}

export function withSearchPath(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema},public`);
  return u.toString();
}
