/**
 * Test fixtures for search: the 40 Synthea bundles as plain resources (urn:uuid references rewritten to
 * Type/id, as the repository's transaction does), loaded straight into `resource` + the index tables.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { openDatabase } from '../../src/db/open.js';
import { migrate } from '../../src/db/migrate.js';
import { indexResource, patientCompartmentsOf } from '../../src/fhir/search/index.js';
import { sharedPath } from '../helpers/shared-data.js';

export const SYNTHEA_DIR = sharedPath('fhir/synthea');

let cache: Resource[] | undefined;

/** Every resource of the 40 bundles, with references rewritten and a fixed meta.lastUpdated. */
export function syntheaResources(): Resource[] {
  if (cache) return cache;
  const out: Resource[] = [];
  for (const file of readdirSync(SYNTHEA_DIR).filter((f) => f.endsWith('.json')).sort()) {
    const bundle = JSON.parse(readFileSync(path.join(SYNTHEA_DIR, file), 'utf8')) as Bundle;
    const map = new Map<string, string>();
    for (const e of bundle.entry ?? []) {
      if (e.fullUrl && e.resource?.id) map.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
    }
    for (const e of bundle.entry ?? []) {
      const text = JSON.stringify(e.resource).replace(/"reference":"(urn:uuid:[^"]+)"/g, (m, u: string) =>
        map.has(u) ? `"reference":"${map.get(u)}"` : m,
      );
      out.push(JSON.parse(text) as Resource);
    }
  }
  // Practitioners and Organizations recur across bundles (conditional creates): keep one of each id.
  const byKey = new Map<string, Resource>();
  for (const r of out) byKey.set(`${r.resourceType}/${r.id}`, r);
  cache = [...byKey.values()];
  return cache;
}

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
