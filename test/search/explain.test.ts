/**
 * On PostgreSQL (TEST_DATABASE_URL), the representative queries must be answered from the index tables:
 * the plans use our btree indexes and never scan `resource` or an index table sequentially. A plan depends on the
 * volume of data, so this runs over the whole shared corpus (40 Synthea patients), skipped when it is absent.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Patient } from '@medplum/fhirtypes';
import { searchResources } from '../../src/fhir/search/index.js';
import { loadResources, postgresDb, syntheaResources } from './helpers.js';
import type { TestDb } from './helpers.js';
import type { Queryable } from '../../src/db/database.js';
import { noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

noteCorpusAbsent();
const corpus = () => syntheaResources(path.join(SHARED_DATA!, 'fhir/synthea'));

/** Wraps a database so every SELECT that fetches resources is EXPLAINed as well; plans are collected. */
function explaining(db: Queryable, plans: string[]): Queryable {
  return {
    exec: (s) => db.exec(s),
    query: async <R,>(sql: string, params?: unknown[]) => {
      if (/^\s*(SELECT [rt]\.|WITH )/.test(sql)) {
        const p = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, params);
        plans.push(p.rows.map((r) => r['QUERY PLAN']).join('\n'));
      }
      return db.query<R>(sql, params);
    },
  };
}

describe.skipIf(!process.env.TEST_DATABASE_URL || !SHARED_DATA)('search plans on PostgreSQL use indexes (shared corpus)', () => {
  let t: TestDb;
  const patient = (SHARED_DATA ? corpus() : []).find((r) => r.resourceType === 'Patient') as Patient;
  beforeAll(async () => {
    t = (await postgresDb())!;
    await loadResources(t.db, corpus());
    await t.db.query('ANALYZE');
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  const cases: Array<[string, string, Array<[string, string]>, RegExp]> = [
    ['Observation by patient and code', 'Observation', [['patient', `Patient/${patient?.id}`], ['code', 'http://loinc.org|8302-2']], /search_timeline_id_idx/],
    ['Observation by patient and date', 'Observation', [['patient', `${patient?.id}`], ['date', 'ge2015'], ['date', 'lt2017']], /search_timeline_date_idx/],
    [
      'Observation by subject and code, newest first',
      'Observation',
      [['subject', `Patient/${patient?.id}`], ['code', 'http://loinc.org|8302-2'], ['_sort', '-date'], ['_count', '10']],
      /Scan Backward using search_timeline_date_idx/,
    ],
    [
      'Observation by patient and category, newest first',
      'Observation',
      [['patient', `${patient?.id}`], ['category', 'vital-signs'], ['_sort', '-date'], ['_count', '20']],
      /Scan Backward using search_timeline_date_idx/,
    ],
    ['Patient by name prefix', 'Patient', [['name', 'alb']], /search_string_value_idx/],
    ['Patient by identifier', 'Patient', [['identifier', 'http://hl7.org/fhir/sid/us-ssn|999-61-3984']], /search_token_value_idx/],
    ['Observation sorted by date', 'Observation', [['_sort', '-date'], ['_count', '50']], /search_sort_hi_idx/],
  ];
  for (const [name, type, params, index] of cases) {
    it(name, async () => {
      const plans: string[] = [];
      const db = explaining(t.db, plans);
      await searchResources(db, { resourceType: type, params, baseUrl: 'http://x/fhir', handling: 'strict' });
      expect(plans.length).toBeGreaterThan(0);
      const plan = plans[0];
      expect(plan, plan).toMatch(index);
      expect(plan, plan).not.toMatch(/Seq Scan on (resource|search_\w+)\b/);
    });
  }
});
