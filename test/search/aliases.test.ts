/**
 * Parameters stored once and read under several names (the static alias table of definitions.ts), and keyset
 * paging. Expectations are computed from the Synthea JSON with plain JS. PGlite, and PostgreSQL when
 * TEST_DATABASE_URL is set.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AllergyIntolerance, Bundle, Condition, Encounter, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { paramOf } from '../../src/fhir/search/definitions.js';
import { extractIndexRows } from '../../src/fhir/search/extract.js';
import { initSearchDefinitions, searchResources } from '../../src/fhir/search/index.js';
import type { SearchRequest } from '../../src/fhir/search/index.js';
import { loadResources, pgliteDb, postgresDb, syntheaResources } from './helpers.js';
import type { TestDb } from './helpers.js';

initSearchDefinitions();
const BASE = 'http://test.local/fhir';
const everything = syntheaResources();
const chosen = everything.filter((r) => r.resourceType === 'Patient').slice(0, 4) as Patient[];
const chosenRefs = new Set(chosen.map((p) => `Patient/${p.id}`));
// the chosen patients, everything that mentions them, and the shared Practitioners/Organizations
const data = everything.filter(
  (r) =>
    r.resourceType === 'Practitioner' ||
    r.resourceType === 'Organization' ||
    (r.resourceType === 'Patient' && chosenRefs.has(`Patient/${r.id}`)) ||
    [...chosenRefs].some((ref) => JSON.stringify(r).includes(`"${ref}"`)),
);
const ofType = <T extends Resource>(t: string): T[] => data.filter((r) => r.resourceType === t) as T[];
const observations = ofType<Observation>('Observation');
const encounters = ofType<Encounter>('Encounter');
const sorted = (a: Iterable<string>): string[] => [...a].sort();
const codesOf = (cc: { coding?: Array<{ system?: string; code?: string }> } | undefined): string[] =>
  (cc?.coding ?? []).map((c) => `${c.system}|${c.code}`);

describe('alias table', () => {
  it('maps parameters with the same, a restricted, or a union expression onto stored ones', () => {
    expect(paramOf('Observation', 'patient')!.alias).toEqual({ codes: ['subject'], targetType: 'Patient' });
    expect(paramOf('Encounter', 'practitioner')!.alias).toEqual({ codes: ['participant'], targetType: 'Practitioner' });
    expect(paramOf('Patient', 'phonetic')!.alias).toEqual({ codes: ['name'] });
    expect(paramOf('Observation', 'combo-code')!.alias?.codes.sort()).toEqual(['code', 'component-code']);
    expect(paramOf('Observation', 'combo-code-value-quantity')!.alias?.codes.sort()).toEqual(['code-value-quantity', 'component-code-value-quantity']);
    // stored: its own expression, and the parameters aliases point at
    for (const [type, code] of [['AllergyIntolerance', 'patient'], ['Observation', 'subject'], ['Observation', 'code'], ['Patient', 'name']]) {
      expect(paramOf(type, code)!.alias, `${type}.${code}`).toBeUndefined();
    }
  });

  it('writes no rows under an alias code, for every Synthea resource', () => {
    for (const r of everything) {
      const rows = extractIndexRows(r);
      const codes = [
        ...rows.token.map((x) => x[0]), ...rows.string.map((x) => x[0]), ...rows.date.map((x) => x[0]),
        ...rows.quantity.map((x) => x[0]), ...rows.reference.map((x) => x[0]), ...rows.uri.map((x) => x[0]),
        ...rows.composite.map((x) => x.code), ...rows.sort.map((x) => x[0]),
      ];
      for (const code of codes) {
        const def = paramOf(r.resourceType, code.split(':')[0]);
        expect(def, `${r.resourceType} ${code}`).toBeDefined();
        expect(def!.alias, `${r.resourceType} ${code}`).toBeUndefined();
      }
    }
  });
});

function suite(name: string, open: () => Promise<TestDb | undefined>): void {
  describe.skipIf(name === 'postgres' && !process.env.TEST_DATABASE_URL)(`aliases and keyset paging on ${name}`, () => {
    let t: TestDb;
    beforeAll(async () => {
      t = (await open())!;
      await loadResources(t.db, data);
      await t.db.query('ANALYZE');
    }, 60_000);
    afterAll(async () => {
      await t?.close();
    });

    const search = (resourceType: string | undefined, params: Array<[string, string]>, extra: Partial<SearchRequest> = {}): Promise<Bundle> =>
      searchResources(t.db, { resourceType, params, baseUrl: BASE, handling: 'strict', ...extra });
    const ids = (b: Bundle, mode = 'match'): string[] => sorted((b.entry ?? []).filter((e) => e.search?.mode === mode).map((e) => e.resource!.id!));
    async function walk(resourceType: string, params: Array<[string, string]>, count: number): Promise<{ ids: string[]; cursors: number }> {
      const seen: string[] = [];
      let cursors = 0;
      let query: Array<[string, string]> = [...params, ['_count', String(count)]];
      for (let page = 0; page < 500; page++) {
        const b = await search(resourceType, query);
        seen.push(...(b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!.id!));
        const next = b.link?.find((l) => l.relation === 'next');
        if (!next) break;
        query = [...new URL(next.url!).searchParams.entries()];
        if (query.some(([k]) => k === '_cursor')) cursors++;
      }
      expect(new Set(seen).size).toBe(seen.length);
      return { ids: seen, cursors };
    }

    it('patient = subject restricted to Patient, also in _include and _revinclude', async () => {
      const p = chosen[1];
      const expected = sorted(observations.filter((o) => o.subject?.reference === `Patient/${p.id}`).map((o) => o.id!));
      expect(expected.length).toBeGreaterThan(0);
      expect(ids(await search('Observation', [['patient', p.id!], ['_count', '1000']]))).toEqual(expected);
      expect(ids(await search('Observation', [['patient:missing', 'true'], ['_count', '1000']]))).toEqual(
        sorted(observations.filter((o) => !o.subject?.reference?.startsWith('Patient/')).map((o) => o.id!)),
      );
      const inc = await search('Observation', [['patient', p.id!], ['_count', '3'], ['_include', 'Observation:patient']]);
      expect(ids(inc, 'include')).toEqual([p.id!]);
      const rev = await search('Patient', [['_id', p.id!], ['_revinclude', 'Encounter:patient']]);
      expect(ids(rev, 'include')).toEqual(sorted(encounters.filter((e) => e.subject?.reference === `Patient/${p.id}`).map((e) => e.id!)));
      // chained through the alias
      const family = p.name![0].family!;
      const chained = await walk('Observation', [['patient.family', family], ['code', '8302-2']], 100);
      expect(sorted(chained.ids)).toEqual(
        sorted(
          observations
            .filter((o) => o.subject?.reference === `Patient/${p.id}` && codesOf(o.code).includes('http://loinc.org|8302-2'))
            .map((o) => o.id!),
        ),
      );
    });

    it('practitioner = participant restricted to Practitioner', async () => {
      const ref = encounters.flatMap((e) => e.participant ?? []).find((x) => x.individual?.reference)!.individual!.reference!;
      const expected = encounters.filter((e) => (e.participant ?? []).some((x) => x.individual?.reference === ref)).map((e) => e.id!);
      expect(sorted((await walk('Encounter', [['practitioner', ref]], 50)).ids)).toEqual(sorted(expected));
    });

    it('combo-code and combo-code-value-quantity cover the Observation and its components', async () => {
      // 8480-6 (systolic) appears only as a component of blood-pressure panels
      const systolic = 'http://loinc.org|8480-6';
      const combo = observations.filter((o) => codesOf(o.code).includes(systolic) || (o.component ?? []).some((c) => codesOf(c.code).includes(systolic)));
      expect(combo.length).toBeGreaterThan(0);
      expect(sorted((await walk('Observation', [['combo-code', systolic]], 100)).ids)).toEqual(sorted(combo.map((o) => o.id!)));
      // top level: body height above 150 cm (the composite's own element), and a component value
      const height = 'http://loinc.org|8302-2';
      const tall = observations.filter((o) => codesOf(o.code).includes(height) && (o.valueQuantity?.value ?? 0) > 150);
      expect(tall.length).toBeGreaterThan(0);
      expect(sorted((await walk('Observation', [['combo-code-value-quantity', `${height}$gt150`]], 100)).ids)).toEqual(sorted(tall.map((o) => o.id!)));
      const high = observations.filter((o) => (o.component ?? []).some((c) => codesOf(c.code).includes(systolic) && (c.valueQuantity?.value ?? 0) > 120));
      expect(sorted((await walk('Observation', [['combo-code-value-quantity', `${systolic}$gt120`]], 100)).ids)).toEqual(sorted(high.map((o) => o.id!)));
    });

    it('sorts by a union alias (combo-value-quantity) through the sort rows of its parts', async () => {
      const p = chosen[0];
      const mine = observations.filter((o) => o.subject?.reference === `Patient/${p.id}` && codesOf(o.code).includes('http://loinc.org|8302-2'));
      const b = await search('Observation', [['patient', p.id!], ['code', '8302-2'], ['_sort', '-combo-value-quantity'], ['_count', '1000']]);
      const values = (b.entry ?? []).map((e) => (e.resource as Observation).valueQuantity!.value!);
      expect(values).toHaveLength(mine.length);
      for (let i = 1; i < values.length; i++) expect(values[i]).toBeLessThanOrEqual(values[i - 1]);
    });

    it('phonetic reads the name rows', async () => {
      const p = chosen[2];
      const prefix = p.name![0].family!.slice(0, 3);
      const byName = ids(await search('Patient', [['name', prefix]]));
      expect(byName).toContain(p.id);
      expect(ids(await search('Patient', [['phonetic', prefix]]))).toEqual(byName);
    });

    it('system-level search uses each type\'s own storage of the same code', async () => {
      const allergies = ofType<AllergyIntolerance>('AllergyIntolerance');
      const p = chosen.find((c) => allergies.some((a) => a.patient?.reference === `Patient/${c.id}`)) ?? chosen[0];
      const expected = [
        ...observations.filter((o) => o.subject?.reference === `Patient/${p.id}`).map((o) => `Observation/${o.id}`),
        ...allergies.filter((a) => a.patient?.reference === `Patient/${p.id}`).map((a) => `AllergyIntolerance/${a.id}`),
      ];
      const b = await search(undefined, [['_type', 'Observation,AllergyIntolerance'], ['patient', p.id!], ['_count', '1000']]);
      expect(sorted((b.entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`))).toEqual(sorted(expected));
    });

    it('pages by keyset cursor: sorted walks (with and without the key) and id order, equal to offset paging', async () => {
      const p = chosen[0];
      const mine = observations.filter((o) => o.subject?.reference === `Patient/${p.id}`);
      const byDate = await walk('Observation', [['patient', p.id!], ['_sort', '-date']], 7);
      expect(byDate.cursors).toBeGreaterThan(0);
      expect(sorted(byDate.ids)).toEqual(sorted(mine.map((o) => o.id!)));
      const dates = byDate.ids.map((id) => Date.parse(mine.find((o) => o.id === id)!.effectiveDateTime!));
      for (let i = 1; i < dates.length; i++) expect(dates[i]).toBeLessThanOrEqual(dates[i - 1]);
      // abatement-date: resources with the key first, then the ones without; the walk crosses from one to the other
      const conditions = ofType<Condition>('Condition');
      const byAbatement = await walk('Condition', [['_sort', 'abatement-date']], 4);
      expect(sorted(byAbatement.ids)).toEqual(sorted(conditions.map((c) => c.id!)));
      const withKey = conditions.filter((c) => c.abatementDateTime).length;
      expect(withKey).toBeGreaterThan(0);
      expect(byAbatement.ids.slice(0, withKey).every((id) => conditions.find((c) => c.id === id)!.abatementDateTime)).toBe(true);
      // no _sort: id order by cursor, same ids as by explicit _offset
      const byId = await walk('Encounter', [], 9);
      expect(byId.ids).toEqual([...byId.ids].sort());
      const byOffset: string[] = [];
      for (let offset = 0; ; offset += 9) {
        const b = await search('Encounter', [['_count', '9'], ['_offset', String(offset)]]);
        byOffset.push(...(b.entry ?? []).map((e) => e.resource!.id!));
        if (!b.link?.some((l) => l.relation === 'next')) break;
      }
      expect(byOffset).toEqual(byId.ids);
      // a filter without _sort drives the page from its index; cursors bound that index too
      const vital = observations.filter((o) => (o.category ?? []).some((c) => codesOf(c).some((x) => x.endsWith('|vital-signs'))));
      const byCategory = await walk('Observation', [['category', 'vital-signs']], 25);
      expect(byCategory.cursors).toBeGreaterThan(1);
      expect(byCategory.ids).toEqual(sorted(vital.map((o) => o.id!)));
    });

    it('rejects a cursor made for another sort, a forged cursor, and _cursor with _offset', async () => {
      const first = await search('Observation', [['_sort', '-date'], ['_count', '2']]);
      const cursor = new URL(first.link!.find((l) => l.relation === 'next')!.url!).searchParams.get('_cursor')!;
      await expect(search('Observation', [['_sort', 'date'], ['_cursor', cursor]])).rejects.toMatchObject({ status: 400 });
      await expect(search('Observation', [['_sort', '-date'], ['_cursor', 'bm90LWEtY3Vyc29y']])).rejects.toMatchObject({ status: 400 });
      await expect(search('Observation', [['_sort', '-date'], ['_cursor', cursor], ['_offset', '4']])).rejects.toMatchObject({ status: 400 });
    });
  });
}

suite('pglite', pgliteDb);
suite('postgres', postgresDb);
