/**
 * The searches a device or results viewer makes (subject + code or category, newest first or in id order, with
 * or without a date range), answered from the timeline index, and `Observation/$lastn`: through the REST API, on
 * PGlite and PostgreSQL. Every page is followed through its next link: each match comes exactly once, in order.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, Observation, OperationOutcome } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { searchResources } from '../../src/fhir/search/index.js';
import type { SearchAccess } from '../../src/fhir/search/index.js';
import { runLastn } from '../../src/fhir/search/lastn.js';

const LOINC = 'http://loinc.org';
const HR = '8867-4';
const RR = '9279-1';
const VITAL = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] };
const LAB = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] };
const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);
const at = (minutesBefore: number): string => new Date(T0 - minutesBefore * 60_000).toISOString();

/** Readings of patient `p`: `n` alternating heart and respiratory rates, one a minute, plus the odd cases. */
function readings(p: string, n: number): Observation[] {
  const out: Observation[] = [];
  for (let k = 0; k < n; k++) {
    out.push({
      resourceType: 'Observation',
      // ids not in time order, so that id order and date order differ
      id: `${p}-${String((k * 37) % 1000).padStart(3, '0')}`,
      status: 'final',
      category: [VITAL],
      code: { coding: [{ system: LOINC, code: k % 2 ? RR : HR }] },
      subject: { reference: `Patient/${p}` },
      effectiveDateTime: at(k),
      valueQuantity: { value: 60 + k },
    });
  }
  return out;
}

/** The odd cases: two codings of one value, no date at all, a Timing with two events, another category. */
function oddOnes(p: string): Observation[] {
  const base = { resourceType: 'Observation' as const, status: 'final' as const, subject: { reference: `Patient/${p}` } };
  return [
    { ...base, id: `${p}-multi`, category: [VITAL], code: { coding: [{ system: LOINC, code: HR }, { system: 'urn:device:codes', code: HR }] }, effectiveDateTime: at(2.5) },
    { ...base, id: `${p}-nodate`, category: [VITAL], code: { coding: [{ system: LOINC, code: HR }] } },
    {
      ...base,
      id: `${p}-timing`,
      category: [VITAL],
      code: { coding: [{ system: LOINC, code: RR }] },
      effectiveTiming: { event: [at(500), at(1.5)] },
    },
    { ...base, id: `${p}-lab`, category: [LAB], code: { coding: [{ system: LOINC, code: '2345-7' }] }, effectiveDateTime: at(3000) },
  ];
}

describe.each(testDatabases())('timeline searches and lastn on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  const all: Observation[] = [...readings('deep', 60), ...oddOnes('deep'), ...readings('shallow', 6)];

  const get = async <T,>(url: string, init?: RequestInit): Promise<{ status: number; body: T }> => {
    const res = await fetch(url.startsWith('http') ? url : `${server.fhir}/${url}`, init);
    return { status: res.status, body: (await res.json()) as T };
  };
  /** Ids of every page, following next links. */
  const pages = async (query: string): Promise<{ ids: string[]; pages: number }> => {
    const ids: string[] = [];
    let url: string | undefined = `Observation?${query}`;
    let n = 0;
    while (url) {
      const r: { status: number; body: Bundle } = await get<Bundle>(url);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      ids.push(...(r.body.entry ?? []).map((e) => e.resource!.id!));
      url = r.body.link?.find((l) => l.relation === 'next')?.url;
      if (url) expect(url).toContain('_cursor=');
      n++;
      expect(n).toBeLessThan(100);
    }
    return { ids, pages: n };
  };
  const codeOf = (o: Observation): string[] => (o.code.coding ?? []).map((c) => c.code!);
  /** The latest instant of the effective[x] (the date sort key of `-date`). */
  const latest = (o: Observation): string | undefined => o.effectiveDateTime ?? o.effectiveTiming?.event?.slice().sort().at(-1);
  const byId = (a: Observation, b: Observation): number => (a.id! < b.id! ? -1 : a.id! > b.id! ? 1 : 0);
  /** `_sort=-date`: dated ones newest first (ties by id, descending), then the undated ones by id. */
  const newestFirst = (list: Observation[]): string[] => {
    const dated = list.filter((o) => latest(o)).sort((a, b) => (latest(a)! === latest(b)! ? -byId(a, b) : latest(a)! < latest(b)! ? 1 : -1));
    return [...dated, ...list.filter((o) => !latest(o)).sort(byId)].map((o) => o.id!);
  };

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db);
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        ...['deep', 'shallow'].map((id) => ({ resource: { resourceType: 'Patient' as const, id }, request: { method: 'PUT' as const, url: `Patient/${id}` } })),
        ...all.map((o) => ({ resource: o, request: { method: 'PUT' as const, url: `Observation/${o.id}` } })),
      ],
    };
    const r = await get<Bundle>('', { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
    expect(r.status, JSON.stringify(r.body).slice(0, 500)).toBe(200);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  it('pages subject + code newest first, every match once and in order', async () => {
    const expected = newestFirst(all.filter((o) => o.subject?.reference === 'Patient/deep' && codeOf(o).includes(HR)));
    const got = await pages(`subject=Patient/deep&code=${LOINC}|${HR}&_sort=-date&_count=7`);
    expect(got.ids).toEqual(expected);
    expect(got.pages).toBe(Math.ceil(expected.length / 7));
    expect(expected.at(-1)).toBe('deep-nodate');
  });

  it('pages patient + category newest first', async () => {
    const expected = newestFirst(all.filter((o) => o.subject?.reference === 'Patient/deep' && o.category?.[0] === VITAL));
    expect((await pages('patient=deep&category=vital-signs&_sort=-date&_count=9')).ids).toEqual(expected);
    expect((await pages('patient=shallow&category=vital-signs&_sort=-date&_count=4')).ids).toEqual(
      newestFirst(all.filter((o) => o.subject?.reference === 'Patient/shallow')),
    );
  });

  it('pages patient alone newest first (the "any code" rows)', async () => {
    const expected = newestFirst(all.filter((o) => o.subject?.reference === 'Patient/deep'));
    expect((await pages('patient=Patient/deep&_sort=-date&_count=16')).ids).toEqual(expected);
  });

  it('finds a value coded under two systems once, by either system or none', async () => {
    const hr = (await pages(`subject=deep&code=${HR}&_sort=-date&_count=100`)).ids;
    expect(hr.filter((id) => id === 'deep-multi')).toHaveLength(1);
    expect((await pages(`subject=deep&code=urn:device:codes|${HR}&_count=5`)).ids).toEqual(['deep-multi']);
    expect((await pages(`subject=deep&code=urn:other|${HR}&_count=5`)).ids).toEqual([]);
  });

  it('pages subject + code + date range in id order', async () => {
    const since = at(20);
    const matches = all.filter(
      (o) => o.subject?.reference === 'Patient/deep' && codeOf(o).includes(RR) && (o.effectiveTiming?.event ?? [o.effectiveDateTime]).some((d) => d && d >= since),
    );
    const expected = matches.sort(byId).map((o) => o.id!);
    expect(expected).toContain('deep-timing'); // its later event is in the range, its earlier one is not
    expect((await pages(`subject=Patient/deep&code=${LOINC}|${RR}&date=ge${since}&_count=4`)).ids).toEqual(expected);
    // an upper bound only: walked in id order with the range checked on each row
    const before = at(50);
    const older = all
      .filter((o) => o.subject?.reference === 'Patient/deep' && codeOf(o).includes(RR) && (o.effectiveTiming?.event ?? [o.effectiveDateTime]).some((d) => d && d <= before))
      .sort(byId)
      .map((o) => o.id!);
    expect(older).toContain('deep-timing');
    expect((await pages(`subject=Patient/deep&code=${LOINC}|${RR}&date=le${before}&_count=3`)).ids).toEqual(older);
  });

  it('keeps other filters and a date sort with a range', async () => {
    const since = at(10);
    const expected = newestFirst(
      all.filter((o) => o.subject?.reference === 'Patient/deep' && codeOf(o).includes(HR) && o.effectiveDateTime && o.effectiveDateTime >= since && (o.valueQuantity?.value ?? -1) >= 64),
    );
    expect((await pages(`patient=deep&code=${HR}&date=ge${since}&value-quantity=ge64&_sort=-date&_count=2`)).ids).toEqual(expected);
  });

  it('answers $lastn: per code the latest max, by GET and by POST Parameters', async () => {
    const deep = all.filter((o) => o.subject?.reference === 'Patient/deep' && latest(o));
    const expectLatest = (list: Observation[], max: number, codes: string[]): string[] => {
      const out = new Set<string>();
      for (const c of [...codes].sort()) for (const id of newestFirst(list.filter((o) => codeOf(o).includes(c))).slice(0, max)) out.add(id);
      return [...out].sort();
    };
    const lastn = async (init: RequestInit | undefined, query = ''): Promise<string[]> => {
      const r = await get<Bundle>(`Observation/$lastn${query}`, init);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.type).toBe('searchset');
      return (r.body.entry ?? []).map((e) => e.resource!.id!).sort();
    };
    expect(await lastn(undefined, '?patient=deep&max=2')).toEqual(expectLatest(deep, 2, [HR, RR, '2345-7']));
    expect(await lastn(undefined, '?patient=Patient/deep')).toEqual(expectLatest(deep, 1, [HR, RR, '2345-7']));
    const vital = deep.filter((o) => o.category?.[0] === VITAL);
    expect(await lastn(undefined, '?subject=Patient/deep&category=vital-signs&max=3')).toEqual(expectLatest(vital, 3, [HR, RR]));
    expect(await lastn(undefined, `?patient=deep&code=${LOINC}|${RR}&max=4`)).toEqual(expectLatest(deep, 4, [RR]));
    const params = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueReference: { reference: 'Patient/deep' } },
        { name: 'category', valueString: 'vital-signs' },
        { name: 'max', valuePositiveInt: 2 },
      ],
    };
    const posted = await lastn({ method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(params) });
    expect(posted).toEqual(expectLatest(vital, 2, [HR, RR]));
    expect(await lastn(undefined, '?patient=nobody')).toEqual([]);
  });

  it('refuses $lastn without a patient or with a bad max, naming the parameter', async () => {
    const bad = async (query: string, text: RegExp): Promise<void> => {
      const r = await get<OperationOutcome>(`Observation/$lastn${query}`);
      expect(r.status).toBe(400);
      expect(r.body.issue?.[0].diagnostics).toMatch(text);
    };
    await bad('?max=2', /exactly one of "patient" or "subject"/);
    await bad('?patient=deep&max=0', /"max" must be a whole number/);
    await bad('?patient=deep&_sort=-date', /does not take "_sort"/);
  });

  it('applies the caller\'s access rules to timeline searches and $lastn', async () => {
    const search = async (access: SearchAccess, params: Array<[string, string]>): Promise<string[]> => {
      const b = await searchResources(db, { resourceType: 'Observation', params, baseUrl: server.fhir, handling: 'strict', access });
      return (b.entry ?? []).map((e) => e.resource!.id!);
    };
    const lastn = async (access: SearchAccess, params: Array<[string, string]>): Promise<string[]> =>
      ((await runLastn(db, { params, baseUrl: server.fhir, access })).entry ?? []).map((e) => e.resource!.id!);
    const deepHr: Array<[string, string]> = [['patient', 'deep'], ['code', HR], ['_sort', '-date'], ['_count', '100']];
    const own = { patientCompartments: ['Patient/deep'] };
    const other = { patientCompartments: ['Patient/shallow'] };
    expect(await search(own, deepHr)).toEqual(await search({}, deepHr));
    expect(await search(other, deepHr)).toEqual([]);
    expect(await search(other, [['subject', 'deep'], ['_count', '100']])).toEqual([]);
    const onlyRr: SearchAccess = { typeCriteria: { Observation: [[['code', `${LOINC}|${RR}`]]] } };
    expect(await search(onlyRr, deepHr)).toEqual([]);
    const rr = await search(onlyRr, [['patient', 'deep'], ['_sort', '-date'], ['_count', '100']]);
    expect(rr.length).toBeGreaterThan(0);
    expect(rr.every((id) => all.find((o) => o.id === id)!.code.coding!.some((c) => c.code === RR))).toBe(true);
    expect(await lastn(own, [['patient', 'deep']])).toHaveLength(3);
    expect(await lastn(other, [['patient', 'deep']])).toEqual([]);
    expect(await lastn(onlyRr, [['patient', 'deep'], ['max', '2']])).toHaveLength(2);
    expect(await lastn({ allowedTypes: new Set(['Patient']) }, [['patient', 'deep']])).toEqual([]);
  });

  it('lists $lastn in the CapabilityStatement', async () => {
    const r = await get<{ rest: Array<{ resource: Array<{ type: string; operation?: Array<{ name: string }> }> }> }>('metadata');
    const obs = r.body.rest[0].resource.find((x) => x.type === 'Observation');
    expect(obs?.operation?.map((o) => o.name)).toContain('lastn');
  });
});
