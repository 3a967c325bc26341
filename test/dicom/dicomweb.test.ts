/**
 * DICOMweb over real HTTP: STOW-RS (per-instance success and failure), QIDO-RS (matching, wildcards,
 * fuzzy names, date ranges, limit/offset, includefield), WADO-RS (instances byte for byte, metadata,
 * frames), IHE IID redirect, and authorisation.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, ImagingStudy } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { type DicomJson, str } from '../../facades/dicom/part10.js';
import { DATA, dicomFiles, header } from './helpers.js';
import { startSmartServer } from '../smart/helpers.js';
import { appToken } from '../smart/flow.js';

function multipart(files: Array<{ body: Buffer; type?: string }>): { body: Buffer; contentType: string } {
  const boundary = 'stow-test-boundary-7d1';
  const parts: Buffer[] = [];
  for (const f of files) parts.push(Buffer.from(`--${boundary}\r\nContent-Type: ${f.type ?? 'application/dicom'}\r\n\r\n`), f.body, Buffer.from('\r\n'));
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

function parseParts(body: Buffer, contentType: string): Array<{ headers: string; body: Buffer }> {
  const boundary = /boundary=([^;\s]+)/.exec(contentType)![1];
  const out: Array<{ headers: string; body: Buffer }> = [];
  const delim = Buffer.from(`--${boundary}`);
  let pos = body.indexOf(delim);
  for (;;) {
    const start = pos + delim.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const headEnd = body.indexOf('\r\n\r\n', start);
    const next = body.indexOf(Buffer.from(`\r\n--${boundary}`), headEnd);
    out.push({ headers: body.subarray(start + 2, headEnd).toString(), body: body.subarray(headEnd + 4, next) });
    pos = next + 2;
  }
  return out;
}

describe.each(testDatabases())('DICOMweb on %s', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let base: string;
  const work = mkdtempSync(path.join(tmpdir(), 'conflux-dicomweb-'));

  const stow = async (files: Array<{ body: Buffer; type?: string }>, url = `${base}/studies`) => {
    const m = multipart(files);
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': m.contentType, accept: 'application/dicom+json' }, body: new Uint8Array(m.body) });
    return { status: res.status, json: (await res.json()) as DicomJson };
  };
  const qido = async (p: string) => {
    const res = await fetch(`${base}${p}`);
    return { status: res.status, json: res.status === 200 ? ((await res.json()) as DicomJson[]) : [] };
  };

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    // On PostgreSQL the instances go to the database blob store, as in a cluster (BLOB_STORE=postgres).
    server = await startTestServer(db, { DATA_DIR: path.join(work, 'data'), BLOB_STORE: backend.name === 'postgres' ? 'postgres' : 'fs', DICOM_VIEWER_URL: 'https://viewer.example/viewer?StudyInstanceUIDs={studyUID}&acc={accessionNumber}&pid={patientID}' });
    base = `${server.url}/dicomweb`;
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  it('STOW-RS stores every valid file and reports each malformed one with a reason', async () => {
    const good = [...dicomFiles(), ...dicomFiles(path.join(DATA, 'series-cr'))];
    const bad = dicomFiles(path.join(DATA, 'malformed'));
    const { status, json } = await stow([...good, ...bad].map((f) => ({ body: readFileSync(f) })));
    expect(status).toBe(202);
    const ok = (json['00081199']?.Value ?? []) as DicomJson[];
    const failed = (json['00081198']?.Value ?? []) as DicomJson[];
    // badVR.dcm has an odd private element but is otherwise readable: it is kept as received.
    expect(ok.length).toBe(good.length + 1);
    expect(ok.map((i) => str(i, '00081155'))).toEqual(expect.arrayContaining(good.map((f) => str(header(f).dataset, '00080018'))));
    expect(failed).toHaveLength(bad.length - 1);
    const reasons = failed.map((f) => `${f['00081197'].Value?.[0]} ${str(f, '00000902')}`);
    expect(reasons).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^49152 truncated: Pixel Data declares 8192 bytes/),
        expect.stringMatching(/^49152 file meta information has no Transfer Syntax UID/),
        expect.stringMatching(/^49152 not a DICOM Part 10 file/),
        expect.stringMatching(/^49152 dataset is malformed or truncated/),
      ]),
    );
    const logged = (await db.query<{ error: string; raw: Uint8Array }>(`SELECT error, raw FROM message_log WHERE channel = 'dicomweb' AND status = 'error'`)).rows;
    expect(logged).toHaveLength(bad.length - 1);
    expect(logged.some((l) => Buffer.from(l.raw).equals(readFileSync(path.join(DATA, 'malformed', 'MR_truncated.dcm'))))).toBe(true);
    // The ImagingStudy is current when the STOW response arrives.
    const cr = header(good[good.length - 1]).dataset;
    const b = (await (await fetch(`${server.fhir}/ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${str(cr, '0020000D')}`)}`)).json()) as Bundle<ImagingStudy>;
    expect(b.entry?.[0]?.resource?.numberOfInstances).toBe(dicomFiles(path.join(DATA, 'series-cr')).filter((f) => str(header(f).dataset, '0020000D') === str(cr, '0020000D')).length);
  });

  it('STOW-RS answers 409 when every instance fails, 415 for a non-multipart body, and a resend is idempotent', async () => {
    const bad = await stow([{ body: readFileSync(path.join(DATA, 'malformed', 'no_meta.dcm')) }, { body: Buffer.from('hello'), type: 'text/plain' }]);
    expect(bad.status).toBe(409);
    expect(bad.json['00081198'].Value).toHaveLength(2);
    const res = await fetch(`${base}/studies`, { method: 'POST', headers: { 'content-type': 'application/dicom' }, body: new Uint8Array(readFileSync(path.join(DATA, 'CT_small.dcm'))) });
    expect(res.status).toBe(415);
    const before = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM dicom_instance')).rows[0].n);
    expect((await stow([{ body: readFileSync(path.join(DATA, 'CT_small.dcm')) }])).status).toBe(200);
    expect(Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM dicom_instance')).rows[0].n)).toBe(before);
  });

  it('QIDO-RS matches names (wildcard, case, fuzzy), dates, UIDs, and pages with limit/offset', async () => {
    const all = await qido('/studies');
    expect(all.status).toBe(200);
    const total = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM dicom_study')).rows[0].n);
    expect(all.json).toHaveLength(total);
    const doe = await qido('/studies?PatientName=doe*');
    expect(doe.json.length).toBeGreaterThan(0);
    for (const s of doe.json) expect(str(s, '00100010')).toMatch(/^Doe\^/);
    expect((await qido('/studies?PatientName=archibald')).status).toBe(204);
    const fuzzy = await qido('/studies?PatientName=archi&fuzzymatching=true');
    expect(fuzzy.json.length).toBe(Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM dicom_study WHERE patient_name = 'Doe^Archibald'`)).rows[0].n));
    expect(new Set(fuzzy.json.map((s) => str(s, '00100010')))).toEqual(new Set(['Doe^Archibald']));
    const ct = header(path.join(DATA, 'CT_small.dcm')).dataset;
    const range = await qido('/studies?StudyDate=20040101-20040131');
    expect(range.json.map((s) => str(s, '0020000D'))).toContain(str(ct, '0020000D'));
    for (const s of range.json) expect(str(s, '00080020') >= '20040101' && str(s, '00080020') <= '20040131').toBe(true);
    const page1 = await qido('/studies?limit=2&offset=0');
    const page2 = await qido('/studies?limit=2&offset=2');
    expect(page1.json).toHaveLength(2);
    expect(page2.json.map((s) => str(s, '0020000D'))).not.toContain(str(page1.json[0], '0020000D'));
    const byUid = await qido(`/studies?StudyInstanceUID=${str(ct, '0020000D')}&includefield=00081030,PatientBirthDate`);
    expect(byUid.json).toHaveLength(1);
    const s = byUid.json[0];
    expect(s['00081190'].Value?.[0]).toBe(`${server.runtime.config.baseUrl}/dicomweb/studies/${str(ct, '0020000D')}`);
    expect(s['00201208'].Value?.[0]).toBe(1);
    expect(s['00080061'].Value).toEqual(['CT']);
    expect(s['00100030']).toBeDefined();
    const series = await qido(`/studies/${str(ct, '0020000D')}/series`);
    expect(series.json.map((x) => str(x, '00080060'))).toEqual(['CT']);
    const inst = await qido(`/studies/${str(ct, '0020000D')}/series/${str(ct, '0020000E')}/instances?includefield=all`);
    expect(inst.json.map((x) => str(x, '00080018'))).toEqual([str(ct, '00080018')]);
    expect(str(inst.json[0], '00280010')).toBe('128');
    expect((await qido('/instances?Modality=MR')).json.length).toBeGreaterThan(0);
    expect((await fetch(`${base}/studies?NotAKeyword=1`)).status).toBe(400);
  });

  it('WADO-RS returns instances byte for byte, metadata as DICOM JSON, and uncompressed frames', async () => {
    const file = path.join(DATA, 'JPEG2000.dcm');
    const h = header(file).dataset;
    const url = `${base}/studies/${str(h, '0020000D')}/series/${str(h, '0020000E')}/instances/${str(h, '00080018')}`;
    const res = await fetch(url, { headers: { accept: 'multipart/related; type="application/dicom"' } });
    expect(res.status).toBe(200);
    const ct = res.headers.get('content-type')!;
    expect(ct).toMatch(/^multipart\/related; type="application\/dicom"/);
    const parts = parseParts(Buffer.from(await res.arrayBuffer()), ct);
    expect(parts).toHaveLength(1);
    expect(parts[0].headers).toMatch(/transfer-syntax=1\.2\.840\.10008\.1\.2\.4\.91/);
    expect(parts[0].body.equals(readFileSync(file))).toBe(true);

    const crFiles = dicomFiles(path.join(DATA, 'series-cr'));
    const crStudy = str(header(crFiles[0]).dataset, '0020000D');
    const studyRes = await fetch(`${base}/studies/${crStudy}`);
    const studyParts = parseParts(Buffer.from(await studyRes.arrayBuffer()), studyRes.headers.get('content-type')!);
    expect(studyParts).toHaveLength(crFiles.filter((f) => str(header(f).dataset, '0020000D') === crStudy).length);

    const md = (await (await fetch(`${url}/metadata`)).json()) as DicomJson[];
    expect(res.status).toBe(200);
    expect(str(md[0], '00100010')).toBe(str(h, '00100010'));
    expect(md[0]['7FE00010']).toBeUndefined();

    const frame = async (name: string) => {
      const d = header(path.join(DATA, name)).dataset;
      const r = await fetch(`${base}/studies/${str(d, '0020000D')}/series/${str(d, '0020000E')}/instances/${str(d, '00080018')}/frames/1`);
      return { status: r.status, parts: r.status === 200 ? parseParts(Buffer.from(await r.arrayBuffer()), r.headers.get('content-type')!) : [] };
    };
    const ctFrame = await frame('CT_small.dcm');
    expect(ctFrame.status).toBe(200);
    const ctHeader = header(path.join(DATA, 'CT_small.dcm'));
    const raw = readFileSync(path.join(DATA, 'CT_small.dcm'));
    expect(ctFrame.parts[0].body.equals(raw.subarray(ctHeader.pixelData!.valueOffset, ctHeader.pixelData!.valueOffset + 128 * 128 * 2))).toBe(true);
    // Big-endian pixels come back little endian: the very bytes of MR_small.dcm (the MR_small_* files share
    // one SOP Instance UID, so each STOW replaces the previous copy).
    expect((await stow([{ body: readFileSync(path.join(DATA, 'MR_small_bigendian.dcm')) }])).status).toBe(200);
    const be = await frame('MR_small_bigendian.dcm');
    const le = header(path.join(DATA, 'MR_small.dcm')).pixelData!;
    const leRaw = readFileSync(path.join(DATA, 'MR_small.dcm')).subarray(le.valueOffset, le.valueOffset + le.length);
    expect(be.parts[0].body.equals(leRaw)).toBe(true);
    expect((await stow([{ body: readFileSync(path.join(DATA, 'MR_small_jp2klossless.dcm')) }])).status).toBe(200);
    expect((await frame('MR_small_jp2klossless.dcm')).status).toBe(406);
    expect((await frame('JPEG2000.dcm')).status).toBe(406);
    const missing = await fetch(`${base}/studies/1.2.3.4/series/1.2.3/instances/1.2/frames/1`);
    expect(missing.status).toBe(404);
  });

  it('redirects IHE Invoke Image Display requests to the configured viewer', async () => {
    const res = await fetch(`${server.url}/iid?requestType=STUDY&studyUID=1.2.3.4&accessionNumber=A%2F1`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('https://viewer.example/viewer?StudyInstanceUIDs=1.2.3.4&acc=A%2F1&pid=');
    expect((await fetch(`${server.url}/iid?requestType=STUDY`, { redirect: 'manual' })).status).toBe(400);
  });
});

describe('DICOMweb authorisation', () => {
  it('shows a patient-scoped token only its patient\'s studies', async () => {
    const [backend] = testDatabases();
    const { db, drop } = await backend.open();
    const s = await startSmartServer(db, { DATA_DIR: mkdtempSync(path.join(tmpdir(), 'conflux-dicomweb-smart-')) });
    try {
      // Two studies of two patients, stored as the system through the facade's own store.
      const { facadeServices } = await import('./helpers.js');
      const svc = facadeServices(s);
      const ct = path.join(DATA, 'CT_small.dcm');
      const cr = dicomFiles(path.join(DATA, 'series-cr'))[0];
      for (const f of [ct, cr]) await svc.store.storeStream((await import('node:fs')).createReadStream(f), { sourceAe: 'TEST' });
      await svc.sync.flush();
      const ctStudy = str(header(ct).dataset, '0020000D');
      const crStudy = str(header(cr).dataset, '0020000D');
      const ctPatient = (await db.query<{ imaging_study_id: string }>('SELECT imaging_study_id FROM dicom_study WHERE study_uid = $1', [ctStudy])).rows[0].imaging_study_id;
      const study = await s.runtime.repo.readResource<ImagingStudy>('ImagingStudy', ctPatient);
      const patientId = (study.subject.reference as string).split('/')[1];
      const user = { username: 'radiologist', password: 'radiologist-password' };
      await s.admin('POST', '/users', { ...user, fhir_user: 'Practitioner/rad-1' });
      const token = (await appToken(s, { ...user, scope: 'launch/patient patient/ImagingStudy.rs', patient: patientId })).access_token;
      const get = (p: string) => fetch(`${s.url}/dicomweb${p}`, { headers: { authorization: `Bearer ${token}` } });
      const list = (await (await get('/studies')).json()) as DicomJson[];
      expect(list.map((x) => str(x, '0020000D'))).toEqual([ctStudy]);
      expect((await get(`/studies/${ctStudy}/metadata`)).status).toBe(200);
      expect((await get(`/studies/${crStudy}/metadata`)).status).toBe(404);
      expect((await get(`/studies/${crStudy}`)).status).toBe(404);
      // Read-only scopes may not STOW.
      const m = multipart([{ body: readFileSync(ct) }]);
      const stowRes = await fetch(`${s.url}/dicomweb/studies`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': m.contentType }, body: new Uint8Array(m.body) });
      expect(stowRes.status).toBe(403);
    } finally {
      await s.stop();
      await drop();
    }
  });


  it('refuses requests without a token when auth is on', async () => {
    const [backend] = testDatabases();
    const { db, drop } = await backend.open();
    const server = await startTestServer(db, { AUTH: 'on', DATA_DIR: mkdtempSync(path.join(tmpdir(), 'conflux-dicomweb-auth-')) });
    try {
      expect((await fetch(`${server.url}/dicomweb/studies`)).status).toBe(401);
      expect((await fetch(`${server.url}/dicomweb/studies`, { method: 'POST', headers: { 'content-type': 'multipart/related; boundary=x' }, body: '--x--' })).status).toBe(401);
    } finally {
      await server.stop();
      await drop();
    }
  });
});
