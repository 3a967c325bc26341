/**
 * Search results against expectations computed independently from the Synthea bundle JSON (plain JS over
 * the resources, no search code). Runs on in-memory PGlite, and on PostgreSQL when TEST_DATABASE_URL is set.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, Condition, Encounter, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { FhirError } from '../../src/fhir/outcome.js';
import { searchIds, searchResources } from '../../src/fhir/search/index.js';
import type { SearchRequest } from '../../src/fhir/search/index.js';
import { loadResources, pgliteDb, postgresDb, syntheaResources } from './helpers.js';
import type { TestDb } from './helpers.js';

const BASE = 'http://test.local/fhir';
const all = syntheaResources();
const ofType = <T extends Resource>(t: string): T[] => all.filter((r) => r.resourceType === t) as T[];
const patients = ofType<Patient>('Patient');
const observations = ofType<Observation>('Observation');
const encounters = ofType<Encounter>('Encounter');
const conditions = ofType<Condition>('Condition');
const sorted = (a: Iterable<string>): string[] => [...a].sort();

// ---- independent expectation helpers ----
/** [low, high] ms of a FHIR dateTime with seconds precision (all Synthea dateTimes have a zone). */
function instantRange(v: string): [number, number] {
  const t = Date.parse(v);
  return [t, t + 999];
}
/** [low, high] ms of a search value of year/month/day precision (UTC). */
function searchRange(v: string): [number, number] {
  const [y, m, d] = v.split('-').map(Number);
  if (d) return [Date.UTC(y, m - 1, d), Date.UTC(y, m - 1, d + 1) - 1];
  if (m) return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1) - 1];
  return [Date.UTC(y, 0, 1), Date.UTC(y + 1, 0, 1) - 1];
}
function datePrefixMatch(prefix: string, [tl, th]: [number, number], [sl, sh]: [number, number]): boolean {
  const contained = tl >= sl && th <= sh;
  switch (prefix) {
    case 'eq': return contained;
    case 'ne': return !contained;
    case 'gt': return th > sh;
    case 'lt': return tl < sl;
    case 'ge': return th > sh || contained;
    case 'le': return tl < sl || contained;
    case 'sa': return tl > sh;
    case 'eb': return th < sl;
  }
  throw new Error(prefix);
}
const refOf = (r: { reference?: string } | undefined): string | undefined => r?.reference;

function suite(name: string, open: () => Promise<TestDb | undefined>): void {
  describe.skipIf(name === 'postgres' && !process.env.TEST_DATABASE_URL)(`search on ${name} (Synthea patients of test/fixtures)`, () => {
    let t: TestDb;
    beforeAll(async () => {
      t = (await open())!;
      await loadResources(t.db, all);
      await t.db.query('ANALYZE');
    }, 60_000);
    afterAll(async () => {
      await t?.close();
    });

    const search = (resourceType: string | undefined, params: Array<[string, string]>, extra: Partial<SearchRequest> = {}): Promise<Bundle> =>
      searchResources(t.db, { resourceType, params, baseUrl: BASE, handling: 'lenient', ...extra });
    const matchIds = (b: Bundle): string[] =>
      sorted((b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!.id!));
    /** All match ids of a search, following next links (keyset `_cursor` or `_offset`); asserts no page repeats an id. */
    async function allPages(resourceType: string, params: Array<[string, string]>, count = 50): Promise<string[]> {
      const seen: string[] = [];
      let query: Array<[string, string]> = [...params, ['_count', String(count)]];
      for (let page = 0; page < 1000; page++) {
        const b = await search(resourceType, query);
        const ids = (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!.id!);
        seen.push(...ids);
        const next = b.link?.find((l) => l.relation === 'next');
        if (!next) break;
        query = [...new URL(next.url!).searchParams.entries()];
      }
      expect(new Set(seen).size).toBe(seen.length);
      return seen;
    }

    it('finds Observations by patient and code', async () => {
      for (const p of patients.slice(0, 10)) {
        const expected = observations
          .filter((o) => refOf(o.subject) === `Patient/${p.id}` && o.code.coding?.some((c) => c.system === 'http://loinc.org' && c.code === '8302-2'))
          .map((o) => o.id!);
        const b = await search('Observation', [['patient', `Patient/${p.id}`], ['code', 'http://loinc.org|8302-2'], ['_count', '500']]);
        expect(matchIds(b)).toEqual(sorted(expected));
        // the same with bare id and subject:Patient
        const b2 = await search('Observation', [['subject:Patient', p.id!], ['code', '8302-2'], ['_count', '500']]);
        expect(matchIds(b2)).toEqual(sorted(expected));
      }
    });

    it('finds Observations by date with every prefix and precision', async () => {
      const eff = observations.filter((o) => o.effectiveDateTime);
      for (const value of ['2015', '2016-03', '2012-02-27']) {
        for (const prefix of ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb']) {
          const s = searchRange(value);
          const expected = eff.filter((o) => datePrefixMatch(prefix, instantRange(o.effectiveDateTime!), s)).map((o) => o.id!);
          const got = await allPages('Observation', [['date', `${prefix}${value}`]], 1000);
          expect(sorted(got), `date=${prefix}${value}`).toEqual(sorted(expected));
        }
      }
    });

    it('combines date bounds (AND) and ranges of several values (OR)', async () => {
      const inRange = (o: Observation, a: string, b: string): boolean => {
        const [l, h] = instantRange(o.effectiveDateTime!);
        return h >= searchRange(a)[0] && l <= searchRange(b)[1];
      };
      const expected = observations.filter((o) => o.effectiveDateTime && inRange(o, '2014-01-01', '2014-06-30'));
      const got = await allPages('Observation', [['date', 'ge2014-01-01'], ['date', 'le2014-06-30']], 1000);
      expect(sorted(got)).toEqual(sorted(expected.map((o) => o.id!)));
      const either = observations.filter((o) => o.effectiveDateTime?.startsWith('2013-') || o.effectiveDateTime?.startsWith('2017-'));
      const got2 = await allPages('Observation', [['date', '2013,2017']], 1000);
      expect(sorted(got2)).toEqual(sorted(either.map((o) => o.id!)));
    });

    it('finds Observations by value-quantity ranges with units', async () => {
      const q = observations.filter((o) => o.valueQuantity?.value !== undefined);
      const cases: Array<[string, (v: number, code?: string) => boolean]> = [
        ['gt100|http://unitsofmeasure.org|cm', (v, c) => c === 'cm' && v > 100],
        ['lt60', (v) => v < 60],
        ['ge170||cm', (v, c) => c === 'cm' && v >= 170],
        ['le20|http://unitsofmeasure.org|kg/m2', (v, c) => c === 'kg/m2' && v <= 20],
      ];
      for (const [value, pred] of cases) {
        const expected = q.filter((o) => pred(o.valueQuantity!.value!, o.valueQuantity!.code)).map((o) => o.id!);
        const got = await allPages('Observation', [['value-quantity', value]], 1000);
        expect(sorted(got), value).toEqual(sorted(expected));
      }
      // eq uses the precision of the value: 178.88 matches [178.875, 178.885)
      const v = q[0].valueQuantity!.value!;
      const text = v.toFixed(2);
      const expected = q.filter((o) => Math.abs(o.valueQuantity!.value! - Number(text)) <= 0.005 && o.valueQuantity!.value! < Number(text) + 0.005).map((o) => o.id!);
      expect(sorted(await allPages('Observation', [['value-quantity', text]], 1000))).toEqual(sorted(expected));
    });

    it('finds blood pressure components (composite component-code-value-quantity)', async () => {
      const expected = observations
        .filter((o) => o.component?.some((c) => c.code.coding?.some((cd) => cd.code === '8480-6') && (c.valueQuantity?.value ?? 0) > 140))
        .map((o) => o.id!);
      expect(expected.length).toBeGreaterThan(0);
      const got = await allPages('Observation', [['component-code-value-quantity', 'http://loinc.org|8480-6$gt140']], 1000);
      expect(sorted(got)).toEqual(sorted(expected));
    });

    it('finds Encounters by date (Period) and type', async () => {
      const s = searchRange('2010');
      const expected = encounters
        .filter((e) => {
          const l = Date.parse(e.period!.start!);
          const h = e.period!.end ? Date.parse(e.period!.end) + 999 : Infinity;
          return l >= s[0] && h <= s[1];
        })
        .map((e) => e.id!);
      expect(sorted(await allPages('Encounter', [['date', '2010']], 1000))).toEqual(sorted(expected));
      const typeCode = encounters[0].type![0].coding![0].code!;
      const byType = encounters.filter((e) => e.type?.some((t) => t.coding?.some((c) => c.code === typeCode))).map((e) => e.id!);
      expect(sorted(await allPages('Encounter', [['type', `http://snomed.info/sct|${typeCode}`]], 1000))).toEqual(sorted(byType));
    });

    it('finds Conditions by clinical status, and token modifiers', async () => {
      const status = (c: Condition): string | undefined => c.clinicalStatus?.coding?.[0]?.code;
      for (const s of ['active', 'resolved']) {
        const expected = conditions.filter((c) => status(c) === s).map((c) => c.id!);
        const b = await search('Condition', [['clinical-status', s], ['_count', '1000'], ['_total', 'accurate']]);
        expect(matchIds(b)).toEqual(sorted(expected));
        expect(b.total).toBe(expected.length);
      }
      const notActive = conditions.filter((c) => status(c) !== 'active').map((c) => c.id!);
      expect(sorted(await allPages('Condition', [['clinical-status:not', 'active']], 1000))).toEqual(sorted(notActive));
      // :text matches a word prefix of CodeableConcept.text / Coding.display
      const word = conditions[0].code!.text!.split(/\s+/)[0].slice(0, 4);
      const words = (s?: string): string[] => (s ?? '').toLowerCase().split(/\s+/);
      const text = conditions
        .filter((c) => [c.code?.text, ...(c.code?.coding ?? []).map((cd) => cd.display)].some((s) => words(s).some((w) => w.startsWith(word.toLowerCase()))))
        .map((c) => c.id!);
      expect(text.length).toBeGreaterThan(0);
      expect(sorted(await allPages('Condition', [['code:text', word]], 1000))).toEqual(sorted(text));
      const noAbatement = conditions.filter((c) => !c.abatementDateTime).map((c) => c.id!);
      expect(sorted(await allPages('Condition', [['abatement-date:missing', 'true']], 1000))).toEqual(sorted(noAbatement));
    });

    it('finds Patients by name prefix, exact, contains, accent-insensitive, and by identifier', async () => {
      const parts = (p: Patient): string[] => (p.name ?? []).flatMap((n) => [n.family ?? '', ...(n.given ?? []), ...(n.prefix ?? []), ...(n.suffix ?? [])]);
      const target = patients[3];
      const family = target.name![0].family!;
      const prefix = family.slice(0, 3).toUpperCase();
      const expected = patients.filter((p) => parts(p).some((s) => s.toLowerCase().startsWith(prefix.toLowerCase()))).map((p) => p.id!);
      expect(matchIds(await search('Patient', [['name', prefix], ['_count', '100']]))).toEqual(sorted(expected));
      expect(matchIds(await search('Patient', [['family:exact', family], ['_count', '100']]))).toEqual(
        sorted(patients.filter((p) => p.name?.some((n) => n.family === family)).map((p) => p.id!)),
      );
      expect(matchIds(await search('Patient', [['family:exact', family.toLowerCase()]]))).toEqual([]);
      const mid = family.slice(1, 4);
      expect(matchIds(await search('Patient', [['family:contains', mid], ['_count', '100']]))).toEqual(
        sorted(patients.filter((p) => p.name?.some((n) => n.family?.toLowerCase().includes(mid.toLowerCase()))).map((p) => p.id!)),
      );
      const accented = patients.find((p) => parts(p).some((s) => /[^\x00-\x7f]/.test(s)));
      if (accented) {
        const word = parts(accented).find((s) => /[^\x00-\x7f]/.test(s))!;
        const plain = word.normalize('NFD').replace(/\p{M}/gu, '');
        expect(matchIds(await search('Patient', [['name', plain]]))).toContain(accented.id);
      }
      const ssn = target.identifier!.find((i) => i.system === 'http://hl7.org/fhir/sid/us-ssn')!;
      expect(matchIds(await search('Patient', [['identifier', `${ssn.system}|${ssn.value}`]]))).toEqual([target.id]);
      expect(matchIds(await search('Patient', [['identifier', ssn.value!]]))).toEqual([target.id]);
      const mr = target.identifier!.find((i) => i.type?.coding?.some((c) => c.code === 'MR'))!;
      const ty = mr.type!.coding![0];
      expect(matchIds(await search('Patient', [['identifier:of-type', `${ty.system}|${ty.code}|${mr.value}`]]))).toEqual([target.id]);
      expect(await searchIds(t.db, 'Patient', [['identifier', `${ssn.system}|${ssn.value}`]], 2)).toEqual([target.id]);
      expect(await searchIds(t.db, 'Patient', [['_id', target.id!]], 2)).toEqual([target.id]);
    });

    it('follows chains one level and reverse chains (_has)', async () => {
      const p = patients[5];
      const given = p.name![0].given![0];
      const withGiven = new Set(patients.filter((x) => x.name?.some((n) => n.given?.some((g) => g.toLowerCase().startsWith(given.toLowerCase())))).map((x) => `Patient/${x.id}`));
      const expected = observations.filter((o) => withGiven.has(refOf(o.subject)!) && o.code.coding?.some((c) => c.code === '8302-2')).map((o) => o.id!);
      expect(sorted(await allPages('Observation', [['subject:Patient.given', given], ['code', '8302-2']], 500))).toEqual(sorted(expected));
      const ssn = p.identifier!.find((i) => i.system === 'http://hl7.org/fhir/sid/us-ssn')!;
      const ofP = observations.filter((o) => refOf(o.subject) === `Patient/${p.id}`).map((o) => o.id!);
      expect(sorted(await allPages('Observation', [['subject.identifier', `${ssn.system}|${ssn.value}`]], 500))).toEqual(sorted(ofP));
      // reverse: patients with an HbA1c (4548-4) observation
      const hba1c = new Set(observations.filter((o) => o.code.coding?.some((c) => c.code === '4548-4')).map((o) => refOf(o.subject)!));
      const expectedPatients = patients.filter((x) => hba1c.has(`Patient/${x.id}`)).map((x) => x.id!);
      expect(matchIds(await search('Patient', [['_has:Observation:patient:code', '4548-4'], ['_count', '100']]))).toEqual(sorted(expectedPatients));
    });

    it('includes subjects and reverse-includes encounters', async () => {
      const b = await search('Observation', [['code', '8302-2'], ['_include', 'Observation:subject'], ['_count', '1000']]);
      const matched = (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as Observation);
      const included = sorted((b.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => `${e.resource!.resourceType}/${e.resource!.id}`));
      expect(included).toEqual(sorted(new Set(matched.map((o) => refOf(o.subject)!))));
      for (const e of b.entry ?? []) expect(e.fullUrl).toBe(`${BASE}/${e.resource!.resourceType}/${e.resource!.id}`);
      const p = patients[1];
      const rb = await search('Patient', [['_id', p.id!], ['_revinclude', 'Encounter:patient']]);
      const encIds = sorted((rb.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => e.resource!.id!));
      expect(encIds).toEqual(sorted(encounters.filter((e) => refOf(e.subject) === `Patient/${p.id}`).map((e) => e.id!)));
      // :iterate — Encounters of the patient, then their service providers
      const ib = await search('Patient', [['_id', p.id!], ['_revinclude', 'Encounter:patient'], ['_include:iterate', 'Encounter:service-provider']]);
      const orgs = sorted((ib.entry ?? []).filter((e) => e.resource!.resourceType === 'Organization').map((e) => `Organization/${e.resource!.id}`));
      const expectedOrgs = sorted(new Set(encounters.filter((e) => refOf(e.subject) === `Patient/${p.id}` && e.serviceProvider).map((e) => refOf(e.serviceProvider)!)));
      expect(orgs).toEqual(expectedOrgs);
    });

    it('sorts by date descending and pages through every page without duplicates or gaps', async () => {
      const p = patients[2];
      const mine = observations.filter((o) => refOf(o.subject) === `Patient/${p.id}`);
      const got = await allPages('Observation', [['patient', p.id!], ['_sort', '-date']], 7);
      expect(sorted(got)).toEqual(sorted(mine.map((o) => o.id!)));
      const dates = got.map((id) => Date.parse(mine.find((o) => o.id === id)!.effectiveDateTime!));
      for (let i = 1; i < dates.length; i++) expect(dates[i]).toBeLessThanOrEqual(dates[i - 1]);
      // several keys: status then ascending date
      const got2 = await allPages('Observation', [['patient', p.id!], ['_sort', 'status,date']], 9);
      const d2 = got2.map((id) => Date.parse(mine.find((o) => o.id === id)!.effectiveDateTime!));
      for (let i = 1; i < d2.length; i++) expect(d2[i]).toBeGreaterThanOrEqual(d2[i - 1]);
      // all Conditions by onset, 13 per page
      const all = await allPages('Condition', [['_sort', 'onset-date']], 13);
      expect(sorted(all)).toEqual(sorted(conditions.map((c) => c.id!)));
    });

    it('reports totals, summary, elements, and unknown parameters', async () => {
      const b = await search('Observation', [['code', '8302-2'], ['_summary', 'count']]);
      expect(b.entry).toBeUndefined();
      expect(b.total).toBe(observations.filter((o) => o.code.coding?.some((c) => c.code === '8302-2')).length);
      const est = await search('Observation', [['_total', 'estimate'], ['_count', '1']]);
      expect(est.total).toBeGreaterThan(0);
      const el = await search('Patient', [['_elements', 'gender'], ['_count', '1']]);
      const r = el.entry![0].resource as Patient;
      expect(r.gender).toBeDefined();
      expect(r.name).toBeUndefined();
      expect(r.meta?.tag?.some((t) => t.code === 'SUBSETTED')).toBe(true);
      const sum = await search('Patient', [['_summary', 'true'], ['_count', '1']]);
      expect((sum.entry![0].resource as Patient).text).toBeUndefined();
      expect((sum.entry![0].resource as Patient).name).toBeDefined();
      const lenient = await search('Patient', [['foo', 'bar'], ['_count', '1']]);
      const oo = lenient.entry!.find((e) => e.search?.mode === 'outcome');
      expect(JSON.stringify(oo?.resource)).toContain('foo');
      await expect(search('Patient', [['foo', 'bar']], { handling: 'strict' })).rejects.toMatchObject({ status: 400 });
    });

    it('rejects malformed values with a 400 naming the parameter', async () => {
      for (const [name, value] of [['date', 'ge2020-13'], ['date', 'xx2020'], ['value-quantity', 'gtabc'], ['code:foo', 'x'], ['_count', '-1']] as const) {
        const err = await search('Observation', [[name, value]]).then(() => undefined, (e: unknown) => e);
        expect(err, `${name}=${value}`).toBeInstanceOf(FhirError);
        expect((err as FhirError).status).toBe(400);
        expect((err as FhirError).message).toContain(name.split(':')[0]);
      }
    });

    it('applies access restrictions to matches and includes', async () => {
      // One patient's compartment: any will do (the fixtures hold six, the corpus forty).
      const p = patients[patients.length - 1]!;
      const access = { patientCompartments: [`Patient/${p.id}`] };
      const b = await search('Observation', [['code', '8302-2'], ['_include', 'Observation:subject'], ['_count', '1000']], { access });
      const matched = (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as Observation);
      expect(matched.length).toBe(observations.filter((o) => refOf(o.subject) === `Patient/${p.id}` && o.code.coding?.some((c) => c.code === '8302-2')).length);
      expect(matched.every((o) => refOf(o.subject) === `Patient/${p.id}`)).toBe(true);
      expect((b.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => e.resource!.id)).toEqual([p.id]);
      // an include the caller may not see is dropped: Practitioners are outside the patient's compartment
      const eb = await search('Encounter', [['_include', 'Encounter:practitioner'], ['_count', '5']], { access });
      expect((eb.entry ?? []).some((e) => e.resource!.resourceType === 'Practitioner')).toBe(false);
      const typed = await search('Observation', [['_count', '1000']], {
        access: { ...access, typeCriteria: { Observation: [[['category', 'laboratory']]] } },
      });
      const labs = observations.filter((o) => refOf(o.subject) === `Patient/${p.id}` && o.category?.some((c) => c.coding?.some((cd) => cd.code === 'laboratory')));
      expect(matchIds(typed)).toEqual(sorted(labs.map((o) => o.id!)));
      const none = await search('Observation', [], { access: { allowedTypes: new Set(['Patient']) } });
      expect(none.entry).toBeUndefined();
    });

    it('searches several types at system level (_type)', async () => {
      const tag = 'https://smarthealthit.org/tags|synthea-5-2019';
      const b = await search(undefined, [['_type', 'Patient,Condition'], ['_tag', tag], ['_total', 'accurate'], ['_count', '5']]);
      expect(b.total).toBe(patients.length + conditions.length);
      expect(b.link?.find((l) => l.relation === 'next')?.url).toContain(`${BASE}?`);
    });
  });
}

suite('pglite', pgliteDb);
suite('postgres', postgresDb);
