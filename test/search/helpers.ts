/**
 * Test fixtures for search: the Synthea bundles as plain resources (tools/synthea.ts), loaded straight into
 * `resource` + the index tables.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { openDatabase } from '../../src/db/open.js';
import { migrate } from '../../src/db/migrate.js';
import { indexResource, patientCompartmentsOf } from '../../src/fhir/search/index.js';
export { syntheaResources } from '../../tools/synthea.js';

let seq = 0;

/** Writes resources as the repository does: resource row (+ compartments) and index rows in one transaction per batch. */
export async function loadResources(db: Database, resources: Resource[], batch = 250): Promise<void> {
  for (let i = 0; i < resources.length; i += batch) {
    await db.transaction(async (tx) => {
      for (const r of resources.slice(i, i + batch)) {
        const lastUpdated = r.meta?.lastUpdated ?? new Date(Date.UTC(2024, 0, 1) + (seq % 1000) * 60_000).toISOString();
        const res = { ...r, meta: { ...r.meta, versionId: '1', lastUpdated } } as Resource;
        await tx.query(
          `INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, compartments, seq)
           VALUES ($1, $2, 1, $3, false, $4, $5, $6)
           ON CONFLICT (resource_type, id) DO UPDATE SET content = EXCLUDED.content, last_updated = EXCLUDED.last_updated,
             compartments = EXCLUDED.compartments, deleted = false`,
          [res.resourceType, res.id, lastUpdated, JSON.stringify(res), patientCompartmentsOf(res), ++seq],
        );
        await indexResource(tx, res);
      }
    });
  }
}

export interface TestDb {
  db: Database;
  name: string;
  close(): Promise<void>;
}

/** In-memory PGlite, migrated. */
export async function pgliteDb(): Promise<TestDb> {
  const db = await openDatabase({ dataDir: null });
  await migrate(db);
  return { db, name: 'pglite', close: () => db.close() };
}

/** A fresh schema on TEST_DATABASE_URL (dropped on close), or undefined when no PostgreSQL is configured. */
export async function postgresDb(): Promise<TestDb | undefined> {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) return undefined;
  const schema = `search_test_${Math.random().toString(36).slice(2, 10)}`;
  const admin = await openDatabase({ databaseUrl: url, dataDir: null });
  await admin.exec(`CREATE SCHEMA ${schema}`);
  await admin.close();
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const db = await openDatabase({ databaseUrl: u.toString(), dataDir: null });
  await migrate(db);
  return {
    db,
    name: 'postgres',
    close: async () => {
      await db.close();
      const a = await openDatabase({ databaseUrl: url, dataDir: null });
      await a.exec(`DROP SCHEMA ${schema} CASCADE`);
      await a.close();
    },
  };
}
