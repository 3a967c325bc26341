import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Observation } from '@medplum/fhirtypes';
import { indexResource, removeResourceIndex, searchIds } from '../../src/fhir/search/index.js';
import { pgliteDb } from './helpers.js';
import type { TestDb } from './helpers.js';

describe('index maintenance', () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await pgliteDb();
  });
  afterAll(async () => {
    await t.close();
  });

  const write = async (o: Observation, deleted = false): Promise<void> => {
    await t.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, seq) VALUES ('Observation', $1, $2::int, now(), $3, $4, $2::bigint)
         ON CONFLICT (resource_type, id) DO UPDATE SET version_id = EXCLUDED.version_id, deleted = EXCLUDED.deleted, content = EXCLUDED.content`,
        [o.id, Number(o.meta!.versionId), deleted, deleted ? null : JSON.stringify(o)],
      );
      if (deleted) await removeResourceIndex(tx, 'Observation', o.id!);
      else await indexResource(tx, o);
    });
  };

  it('replaces rows on update and removes them on delete', async () => {
    const v1: Observation = { resourceType: 'Observation', id: 'w1', meta: { versionId: '1' }, status: 'final', code: { coding: [{ system: 's', code: 'a' }] }, subject: { reference: 'Patient/p1' } };
    await write(v1);
    expect(await searchIds(t.db, 'Observation', [['code', 's|a']], 10)).toEqual(['w1']);
    await write({ ...v1, meta: { versionId: '2' }, code: { coding: [{ system: 's', code: 'b' }] } });
    expect(await searchIds(t.db, 'Observation', [['code', 's|a']], 10)).toEqual([]);
    expect(await searchIds(t.db, 'Observation', [['code', 's|b'], ['patient', 'p1']], 10)).toEqual(['w1']);
    const rows = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM search_token WHERE id = 'w1' AND code = 'code'`);
    expect(rows.rows[0].n).toBe(1);
    await write({ ...v1, meta: { versionId: '3' } }, true);
    expect(await searchIds(t.db, 'Observation', [['code', 's|b']], 10)).toEqual([]);
    for (const table of ['search_token', 'search_reference', 'search_string']) {
      const r = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE id = 'w1'`);
      expect(r.rows[0].n, table).toBe(0);
    }
  });

  it('rejects unknown parameters in conditional searches instead of ignoring them', async () => {
    await expect(searchIds(t.db, 'Observation', [['identifer', 'x']], 2)).rejects.toMatchObject({ status: 400 });
  });
});
