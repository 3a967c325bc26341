/**
 * Migration 090 fills search_timeline for data written before it, from the general index tables. Its rows must be
 * those the writer makes for the same resources (Synthea patients, and readings with two-system codings, no date,
 * a Timing), or a database upgraded in place would answer timeline searches differently from a fresh one.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Observation, Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { loadResources, syntheaResources } from './helpers.js';

const migration = readFileSync(new URL('../../migrations/090_search_timeline.sql', import.meta.url), 'utf8');
const backfill = migration.slice(migration.indexOf('INSERT INTO search_timeline'));

const odd: Observation[] = [
  {
    resourceType: 'Observation',
    id: 'two-systems',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }, { system: 'urn:device', code: '8867-4' }] },
    subject: { reference: 'Patient/p1' },
    effectiveDateTime: '2026-11-30T10:00:00Z',
  },
  { resourceType: 'Observation', id: 'undated', status: 'final', code: { coding: [{ code: 'x' }] }, subject: { reference: 'Patient/p1' } },
  {
    resourceType: 'Observation',
    id: 'timing',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '9279-1' }] },
    subject: { reference: 'Group/g1' },
    effectiveTiming: { event: ['2026-11-30T09:00:00Z', '2026-11-30T11:00:00Z'] },
  },
  { resourceType: 'Observation', id: 'no-subject', status: 'final', code: { coding: [{ code: 'y' }] } },
];

describe.each(testDatabases())('migration 090 backfill on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  const rows = async (): Promise<unknown[]> =>
    (
      await db.query(
        `SELECT resource_type, id, subject_type, subject_id, code, system, value, multi, hi, low::text, high::text
           FROM search_timeline ORDER BY resource_type, id, code, value`,
      )
    ).rows;

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    const synthea = syntheaResources().filter((r) => ['Patient', 'Observation', 'DiagnosticReport'].includes(r.resourceType));
    await loadResources(db, [...synthea.slice(0, 1500), ...(odd as Resource[])]);
  }, 60_000);
  afterAll(async () => {
    await drop?.();
  });

  it('writes the rows the writer writes', async () => {
    const written = await rows();
    // The fixture bundles give some 850 rows: enough readings of every shape for the comparison to mean something.
    expect(written.length).toBeGreaterThan(500);
    await db.exec('DELETE FROM search_timeline');
    await db.exec(backfill);
    // the backfill keeps the smallest system of a two-system value, the writer the first: both are valid
    // (`multi` sends a system|code search to search_token), so compare with the system of such rows set aside
    const norm = (list: unknown[]): unknown[] => list.map((r) => ((r as { multi: boolean }).multi ? { ...(r as object), system: '*' } : r));
    expect(norm(await rows())).toEqual(norm(written));
  });
});
