import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningS3, startS3Server } from '../../tools/s3-server.js';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { downloadAll, downloadDeleted, downloadErrors, kickoff, KICKOFF_HEADERS, loadSynthea, waitForManifest } from './helpers.js';

describe.each(testDatabases())('system export on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let dataDir: string;
  let s3: RunningS3 | undefined;
  const counts = new Map<string, number>();

  beforeAll(async () => {
    ({ db, drop } = await tdb.open());
    dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-export-'));
    // Export files in a shared store, as in a cluster: the database on PostgreSQL, an S3 API server on PGlite.
    s3 = tdb.name === 'postgres' ? undefined : await startS3Server();
    const blobs: Record<string, string> = s3
      ? { BLOB_STORE: 's3', S3_BUCKET: s3.bucket, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: s3.accessKeyId, S3_SECRET_ACCESS_KEY: s3.secretAccessKey }
      : { BLOB_STORE: 'postgres' };
    server = await startTestServer(db, { DATA_DIR: dataDir, ...blobs, EXPORT_FILE_MAX_RESOURCES: '50', EXPORT_POLL_MS: '50', EXPORT_RETRY_AFTER_SECONDS: '1' });
    await loadSynthea(server.fhir, 3);
    const r = await db.query<{ resource_type: string; n: number }>(
      `SELECT resource_type, count(*)::int AS n FROM resource WHERE NOT deleted GROUP BY resource_type`,
    );
    for (const row of r.rows) counts.set(row.resource_type, Number(row.n));
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await s3?.stop();
    await drop?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('exports every resource once, split into files of at most EXPORT_FILE_MAX_RESOURCES', async () => {
    const status = await kickoff(`${server.fhir}/$export`);
    expect(status).toMatch(/\/export\/jobs\/[0-9a-f-]{36}$/);
    const m = await waitForManifest(status);
    expect(m.requiresAccessToken).toBe(true);
    expect(m.request).toBe(`${server.fhir}/$export`);
    expect(Date.parse(m.transactionTime)).not.toBeNaN();
    expect(m.error).toEqual([]);
    for (const o of m.output) expect(o.count).toBeLessThanOrEqual(50);
    const got = await downloadAll(m);
    const gotCounts = new Map([...got].map(([t, rs]) => [t, rs.length]));
    expect(gotCounts).toEqual(counts);
    for (const [, rs] of got) expect(new Set(rs.map((r) => r.id)).size).toBe(rs.length);
    expect(counts.get('Observation')).toBeGreaterThan(50);
    expect(m.output.filter((o) => o.type === 'Observation').length).toBe(Math.ceil(counts.get('Observation')! / 50));
    // The files are where BLOB_STORE says: rows of the database store, or objects in the bucket.
    const inDb = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM blob WHERE key LIKE 'export/%'")).rows[0].n;
    expect(inDb).toBe(s3 ? 0 : m.output.length);
    if (s3) expect((await server.runtime.blobs.list('export/')).length).toBe(m.output.length);
  });

  it('answers 400 with an OperationOutcome without Prefer: respond-async or Accept: application/fhir+json', async () => {
    for (const headers of <Array<Record<string, string>>>[{ accept: 'application/fhir+json' }, { prefer: 'respond-async' }, { prefer: 'respond-async', accept: 'application/json' }]) {
      const res = await fetch(`${server.fhir}/$export`, { headers });
      expect(res.status).toBe(400);
      const oo = await res.json();
      expect(oo.resourceType).toBe('OperationOutcome');
      expect(oo.issue[0].diagnostics).toMatch(/Prefer: respond-async|Accept: application\/fhir\+json/);
    }
  });

  it('rejects malformed parameters with 400 naming the parameter', async () => {
    const cases: Array<[string, RegExp]> = [
      ['_outputFormat=text/csv', /_outputFormat/],
      ['_since=yesterday', /_since/],
      ['_type=Patient,Nonsense', /Nonsense/],
      ['_typeFilter=Observation%3Fcategory%3Dlaboratory&_type=Patient', /not in _type/],
      ['_typeFilter=Observation%3Fnosuchparam%3D1', /nosuchparam/],
      ['patient=Patient/1', /Patient and Group level/],
    ];
    for (const [q, re] of cases) {
      const res = await fetch(`${server.fhir}/$export?${q}`, { headers: KICKOFF_HEADERS });
      expect(res.status, q).toBe(400);
      expect(JSON.stringify(await res.json()), q).toMatch(re);
    }
  });

  it('unsupported parameters: 400 under handling=strict, otherwise a warning in the error file', async () => {
    const strict = await fetch(`${server.fhir}/$export?_type=Patient&_frobnicate=1`, {
      headers: { ...KICKOFF_HEADERS, prefer: 'respond-async, handling=strict' },
    });
    expect(strict.status).toBe(400);
    expect(JSON.stringify(await strict.json())).toMatch(/_frobnicate/);
    const m = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient&_frobnicate=1&includeAssociatedData=_custom`));
    expect(m.output.map((o) => o.type)).toEqual(['Patient']);
    const errors = await downloadErrors(m);
    const text = JSON.stringify(errors);
    expect(errors.every((e) => e.resourceType === 'OperationOutcome')).toBe(true);
    expect(text).toMatch(/_frobnicate/);
    expect(text).toMatch(/_custom/);
  });

  it('_type limits the types; POST with a Parameters body works the same', async () => {
    const m = await waitForManifest(
      await kickoff(`${server.fhir}/$export`, {
        method: 'POST',
        body: {
          resourceType: 'Parameters',
          parameter: [
            { name: '_type', valueString: 'Patient,Condition' },
            { name: '_outputFormat', valueString: 'application/fhir+ndjson' },
          ],
        },
      }),
    );
    const got = await downloadAll(m);
    expect([...got.keys()].sort()).toEqual(['Condition', 'Patient']);
    expect(got.get('Patient')!.length).toBe(counts.get('Patient'));
    expect(got.get('Condition')!.length).toBe(counts.get('Condition'));
  });

  it('_since exports only resources changed after it', async () => {
    const before = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient`));
    const since = before.transactionTime;
    const patients = (await downloadAll(before)).get('Patient')!;
    const p = patients[0];
    const upd = await fetch(`${server.fhir}/Patient/${p.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...p, gender: p.gender === 'male' ? 'female' : 'male', meta: undefined }),
    });
    expect(upd.status).toBe(200);
    const m = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient,Observation&_since=${encodeURIComponent(since)}`));
    const got = await downloadAll(m);
    expect([...got.keys()]).toEqual(['Patient']);
    expect(got.get('Patient')!.map((r) => r.id)).toEqual([p.id]);
    expect(got.get('Patient')![0].meta.versionId).toBe('2');
  });

  it('_since lists what was deleted since then in "deleted", at system and Patient level, and not before it', async () => {
    const obs = await db.query<{ id: string; content: string }>(`SELECT id, content FROM resource WHERE resource_type = 'Observation' AND NOT deleted ORDER BY id LIMIT 3`);
    const [early, late] = obs.rows;
    expect((await fetch(`${server.fhir}/Observation/${early!.id}`, { method: 'DELETE' })).status).toBe(200);
    const before = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient`));
    expect(before.deleted).toEqual([]);
    const since = before.transactionTime;
    expect((await fetch(`${server.fhir}/Observation/${late!.id}`, { method: 'DELETE' })).status).toBe(200);

    const system = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Observation&_since=${encodeURIComponent(since)}`));
    expect(await downloadDeleted(system)).toEqual([`Observation/${late!.id}`]);
    expect((await downloadAll(system)).get('Observation') ?? []).toEqual([]);
    const patientLevel = await waitForManifest(await kickoff(`${server.fhir}/Patient/$export?_type=Observation&_since=${encodeURIComponent(since)}`));
    expect(await downloadDeleted(patientLevel)).toEqual([`Observation/${late!.id}`]);
    // Without _since a client wants the current state only.
    const full = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Observation`));
    expect(full.deleted).toEqual([]);
    // A filtered type cannot say whether a deleted resource matched: nothing listed, and the manifest says so.
    const tf = encodeURIComponent('Observation?category=laboratory');
    const filtered = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Observation&_typeFilter=${tf}&_since=${encodeURIComponent(since)}`));
    expect(filtered.deleted).toEqual([]);
    expect((await downloadErrors(filtered)).map((o) => o.issue[0].diagnostics).join('\n')).toMatch(/1 Observation resource\(s\) deleted since _since are not listed/);
  });

  it('_typeFilter keeps only the resources its search matches (alternatives OR-ed)', async () => {
    const r = await db.query<{ id: string; content: string }>(`SELECT id, content FROM resource WHERE resource_type = 'Observation' AND NOT deleted`);
    const category = (c: string) => (JSON.parse(c).category ?? []).flatMap((x: any) => (x.coding ?? []).map((y: any) => y.code));
    const lab = r.rows.filter((x) => category(x.content).includes('laboratory')).map((x) => x.id).sort();
    const vital = r.rows.filter((x) => category(x.content).includes('vital-signs')).map((x) => x.id).sort();
    expect(lab.length).toBeGreaterThan(0);
    expect(vital.length).toBeGreaterThan(0);
    const tf = encodeURIComponent('Observation?category=laboratory');
    const m = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Observation,Patient&_typeFilter=${tf}`));
    const got = await downloadAll(m);
    expect(got.get('Observation')!.map((o) => o.id).sort()).toEqual(lab);
    expect(got.get('Patient')!.length).toBe(counts.get('Patient'));
    const both = encodeURIComponent('Observation?category=laboratory,Observation?category=vital-signs');
    const m2 = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Observation&_typeFilter=${both}`));
    expect((await downloadAll(m2)).get('Observation')!.map((o) => o.id).sort()).toEqual([...new Set([...lab, ...vital])].sort());
  });

  it('includeAssociatedData=LatestProvenanceResources adds the Provenance resources to a _type-limited export', async () => {
    const pid = (await db.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Patient' LIMIT 1`)).rows[0].id;
    const prov = { resourceType: 'Provenance', target: [{ reference: `Patient/${pid}` }], recorded: '2024-01-01T00:00:00Z', agent: [{ who: { display: 'bulk test' } }] };
    const created = await (await fetch(`${server.fhir}/Provenance`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(prov) })).json();
    const updated = await fetch(`${server.fhir}/Provenance/${created.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...prov, id: created.id, recorded: '2024-02-01T00:00:00Z' }),
    });
    expect(updated.status).toBe(200);
    const m = await waitForManifest(await kickoff(`${server.fhir}/Patient/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources`));
    const got = await downloadAll(m);
    expect([...got.keys()].sort()).toEqual(['Patient', 'Provenance']);
    expect(got.get('Provenance')!.map((p) => [p.id, p.meta.versionId])).toEqual([[created.id, '2']]);
    expect(m.error).toEqual([]);
  });

  it('_elements keeps the listed elements and marks resources SUBSETTED', async () => {
    const m = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient,Condition&_elements=Patient.gender,code`));
    const got = await downloadAll(m);
    for (const p of got.get('Patient')!) {
      expect(Object.keys(p).sort()).toEqual(['code', 'gender', 'id', 'meta', 'resourceType'].filter((k) => k in p).sort());
      expect(p.gender).toBeDefined();
      expect(p.name).toBeUndefined();
      expect(p.meta.tag.some((t: any) => t.code === 'SUBSETTED')).toBe(true);
    }
    for (const c of got.get('Condition')!) {
      expect(c.code).toBeDefined();
      expect(c.subject).toBeUndefined();
    }
  });
});
