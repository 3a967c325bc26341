/**
 * DIMSE with DCMTK's real tools over real sockets: echoscu, storescu (every file of the pydicom set,
 * malformed ones included), findscu (Patient/Study Root, -W worklist), getscu, movescu to a DCMTK
 * storescp, and MPPS N-CREATE/N-SET with dcmjs-dimse's client (DCMTK has no MPPS SCU tool).
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, ImagingStudy, Patient, Procedure, ServiceRequest } from '@medplum/fhirtypes';
import dimseModule from 'dcmjs-dimse';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { str } from '../../facades/dicom/part10.js';
import { DATA, dicomFiles, freePort, header, run, storescuSyntaxOption } from './helpers.js';
import { until } from '../helpers/until.js';

const dimse = dimseModule as unknown as typeof import('dcmjs-dimse');
const AE = 'CONFLUX';

describe.each(testDatabases())('DIMSE facade with DCMTK on %s', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let port: number;
  let destPort: number;
  let storescp: ChildProcess;
  const work = mkdtempSync(path.join(tmpdir(), 'conflux-dimse-'));
  const destDir = path.join(work, 'dest');
  const addr = () => ['127.0.0.1', String(port)];

  const fhir = async <T>(p: string, init?: RequestInit): Promise<T> => {
    const res = await fetch(`${server.fhir}/${p}`, { ...init, headers: { 'content-type': 'application/fhir+json', ...(init?.headers ?? {}) } });
    return (await res.json()) as T;
  };
  const count = async (sql: string, params: unknown[] = []) => Number((await db.query<{ n: string }>(sql, params)).rows[0].n);

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    port = await freePort();
    destPort = await freePort();
    const aesFile = path.join(work, 'aes.json');
    writeFileSync(
      aesFile,
      JSON.stringify([
        { aeTitle: 'STORESCU' },
        { aeTitle: 'ECHOSCU' },
        { aeTitle: 'FINDSCU' },
        { aeTitle: 'GETSCU' },
        { aeTitle: 'MOVESCU' },
        { aeTitle: 'MODALITY1', modalities: ['CT'] },
        { aeTitle: 'DEST', host: '127.0.0.1', port: destPort },
      ]),
    );
    server = await startTestServer(db, { DICOM_PORT: String(port), DICOM_AES_FILE: aesFile, DATA_DIR: path.join(work, 'data') });
    await import('node:fs/promises').then((fs) => fs.mkdir(destDir, { recursive: true }));
    storescp = spawn('storescp', ['-aet', 'DEST', '-od', destDir, String(destPort)], { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'ignore' });
  });

  afterAll(async () => {
    storescp?.kill();
    await server?.stop();
    await drop?.();
  });

  it('answers C-ECHO and refuses unknown calling AEs and a wrong called AE', async () => {
    expect((await run('echoscu', ['-aet', 'ECHOSCU', '-aec', AE, ...addr()])).code).toBe(0);
    const intruder = await run('echoscu', ['-aet', 'INTRUDER', '-aec', AE, ...addr()]);
    expect(intruder.code).not.toBe(0);
    expect(intruder.stderr).toMatch(/Calling AE Title Not Recognized|rejected/i);
    expect((await run('echoscu', ['-aet', 'ECHOSCU', '-aec', 'SOMEONE', ...addr()])).code).not.toBe(0);
  });

  it('stores every pydicom file with storescu, bytes as received', async () => {
    const files = dicomFiles();
    const results: Record<string, number> = {};
    for (const f of files) {
      const ts = header(f).transferSyntaxUid;
      // -R proposes exactly the files' SOP classes (storescu's default list lacks e.g. Segmentation).
      results[path.basename(f)] = (await run('storescu', ['-R', ...storescuSyntaxOption(ts), '-aet', 'STORESCU', '-aec', AE, ...addr(), f])).code;
    }
    // DCMTK itself cannot read SC_rgb_jpeg.dcm (explicit-VR syntax declared, implicit-VR encoded); STOW-RS stores it.
    const expected = Object.fromEntries(files.map((f) => [path.basename(f), path.basename(f) === 'SC_rgb_jpeg.dcm' ? 1 : 0]));
    expect(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v === 0 ? 0 : 1]))).toEqual(expected);
    const series = [...dicomFiles(path.join(DATA, 'series-cr')), ...dicomFiles(path.join(DATA, 'series-mr'))];
    const r = await run('storescu', ['-aet', 'STORESCU', '-aec', AE, ...addr(), ...series]);
    expect(r.code, r.stderr).toBe(0);
    // Some series files repeat SOP Instance UIDs of the single files: count distinct instances.
    const uids = new Set([...files.filter((f) => !f.endsWith('SC_rgb_jpeg.dcm')), ...series].map((f) => str(header(f).dataset, '00080018')));
    expect(await count('SELECT count(*) AS n FROM dicom_instance')).toBe(uids.size);

    // Uncompressed and compressed alike: the stored blob holds the sender's dataset unchanged.
    const ct = header(path.join(DATA, 'CT_small.dcm'));
    const row = (await db.query<{ transfer_syntax: string; pixel_length: string }>('SELECT transfer_syntax, pixel_length FROM dicom_instance WHERE sop_uid = $1', [str(ct.dataset, '00080018')])).rows[0];
    expect(row.transfer_syntax).toBe('1.2.840.10008.1.2.1');
    expect(Number(row.pixel_length)).toBe(ct.pixelData!.length);
    const j2k = header(path.join(DATA, 'JPEG2000.dcm'));
    const j = (await db.query<{ transfer_syntax: string }>('SELECT transfer_syntax FROM dicom_instance WHERE sop_uid = $1', [str(j2k.dataset, '00080018')])).rows[0];
    expect(j.transfer_syntax).toBe('1.2.840.10008.1.2.4.91');
  });

  it('treats a resent SOP Instance UID as idempotent', async () => {
    const before = await count('SELECT count(*) AS n FROM dicom_instance');
    const r = await run('storescu', ['-aet', 'STORESCU', '-aec', AE, ...addr(), path.join(DATA, 'CT_small.dcm'), path.join(DATA, 'CT_small.dcm')]);
    expect(r.code).toBe(0);
    expect(await count('SELECT count(*) AS n FROM dicom_instance')).toBe(before);
  });

  it('keeps serving after malformed files, and answers a dataset without UIDs with a failure status and comment', async () => {
    for (const f of readdirSync(path.join(DATA, 'malformed'))) {
      await run('storescu', ['-aet', 'STORESCU', '-aec', AE, ...addr(), path.join(DATA, 'malformed', f)]);
    }
    expect((await run('echoscu', ['-aet', 'ECHOSCU', '-aec', AE, ...addr()])).code).toBe(0);
    // A dataset DCMTK would never send: no Study/Series Instance UID.
    const ds = new dimse.Dataset({ SOPClassUID: '1.2.840.10008.5.1.4.1.1.7', SOPInstanceUID: '1.2.3.4.5.6.7.8.9', PatientID: 'X' }, '1.2.840.10008.1.2.1');
    const req = new dimse.requests.CStoreRequest(ds);
    const status = await new Promise<{ status: number; comment: string }>((resolve, reject) => {
      req.on('response', (res: InstanceType<typeof dimse.responses.CStoreResponse>) => resolve({ status: res.getStatus(), comment: res.getErrorComment() }));
      const client = new dimse.Client();
      client.on('networkError', reject);
      client.addRequest(req);
      client.send('127.0.0.1', port, 'STORESCU', AE);
    });
    expect(status.status).toBe(0xc000);
    expect(status.comment).toMatch(/Study Instance UID/);
    expect(await count('SELECT count(*) AS n FROM dicom_instance WHERE sop_uid = $1', ['1.2.3.4.5.6.7.8.9'])).toBe(0);
    // Kept in the message log with its bytes, the error and the status we answered.
    const logged = (await db.query<{ sender: string; error: string; ack: string; raw: Uint8Array }>(`SELECT sender, error, ack, raw FROM message_log WHERE channel = 'dicom' AND control_id = $1`, ['1.2.3.4.5.6.7.8.9'])).rows;
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ sender: 'STORESCU', ack: '0xc000' });
    expect(logged[0].error).toMatch(/Study Instance UID/);
    expect(Buffer.from(logged[0].raw).toString('ascii', 128, 132)).toBe('DICM');
  });

  it('keeps one ImagingStudy per study, linked to a Patient by PatientID and issuer', async () => {
    const mr = dicomFiles(path.join(DATA, 'series-mr')).map(header);
    const studyUid = str(mr[0].dataset, '0020000D');
    const inStudy = mr.filter((h) => str(h.dataset, '0020000D') === studyUid);
    const study = await until(async () => {
      const b = await fhir<Bundle<ImagingStudy>>(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`);
      const s = b.entry?.[0]?.resource;
      return s && s.numberOfInstances === inStudy.length ? s : undefined;
    }, 'the ImagingStudy with every instance');
    expect(study.series?.reduce((n, s) => n + (s.instance?.length ?? 0), 0)).toBe(inStudy.length);
    expect(study.numberOfSeries).toBe(new Set(inStudy.map((h) => str(h.dataset, '0020000E'))).size);
    expect(study.modality?.[0].code).toBe('MR');
    expect(study.endpoint?.[0].reference).toMatch(/^Endpoint\//);
    const patient = await fhir<Patient>(study.subject.reference as string);
    // No IssuerOfPatientID: the sending AE is the assigning authority, as the HL7 facade does with MSH-4.
    expect(patient.identifier?.[0]).toEqual({ system: 'urn:conflux:hl7v2:aa:STORESCU', value: str(mr[0].dataset, '00100020') });
    const all = await fhir<Bundle>('ImagingStudy?_summary=count');
    expect(all.total).toBe(await count('SELECT count(*) AS n FROM dicom_study'));
  });

  it('answers C-FIND at study, series and image level (Study Root) and patient level (Patient Root)', async () => {
    const out = path.join(work, 'find-study');
    await import('node:fs/promises').then((fs) => fs.mkdir(out, { recursive: true }));
    const r = await run('findscu', ['-S', '-aet', 'FINDSCU', '-aec', AE, '-X', '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', 'PatientName=Doe^*', '-k', 'StudyInstanceUID', '-k', 'NumberOfStudyRelatedInstances', '-k', 'StudyDate=20000101-', ...addr()]);
    expect(r.code, r.stderr).toBe(0);
    const found = readdirSync(out).map((f) => header(path.join(out, f)).dataset);
    expect(found.length).toBeGreaterThan(0);
    for (const d of found) expect(str(d, '00100010')).toMatch(/^Doe\^/);
    const expected = await count(`SELECT count(*) AS n FROM dicom_study WHERE patient_name LIKE 'Doe^%' AND study_date >= '20000101'`);
    expect(found.length).toBe(expected);

    const img = path.join(work, 'find-image');
    await import('node:fs/promises').then((fs) => fs.mkdir(img, { recursive: true }));
    const ct = header(path.join(DATA, 'CT_small.dcm')).dataset;
    const r2 = await run('findscu', ['-S', '-aet', 'FINDSCU', '-aec', AE, '-X', '-od', img, '-k', 'QueryRetrieveLevel=IMAGE', '-k', `StudyInstanceUID=${str(ct, '0020000D')}`, '-k', 'SOPInstanceUID', '-k', 'Rows', ...addr()]);
    expect(r2.code, r2.stderr).toBe(0);
    const imgs = readdirSync(img).map((f) => header(path.join(img, f)).dataset);
    expect(imgs.map((d) => str(d, '00080018'))).toEqual([str(ct, '00080018')]);
    expect(str(imgs[0], '00280010')).toBe(str(ct, '00280010'));

    const pat = path.join(work, 'find-patient');
    await import('node:fs/promises').then((fs) => fs.mkdir(pat, { recursive: true }));
    const r3 = await run('findscu', ['-P', '-aet', 'FINDSCU', '-aec', AE, '-X', '-od', pat, '-k', 'QueryRetrieveLevel=PATIENT', '-k', 'PatientID=1CT1', '-k', 'PatientName', '-k', 'NumberOfPatientRelatedStudies', ...addr()]);
    expect(r3.code, r3.stderr).toBe(0);
    const pats = readdirSync(pat).map((f) => header(path.join(pat, f)).dataset);
    expect(pats).toHaveLength(1);
    expect(str(pats[0], '00100010')).toBe('CompressedSamples^CT1');
  });

  it('serves C-GET and C-MOVE of a stored study', async () => {
    const cr = dicomFiles(path.join(DATA, 'series-cr')).map(header);
    const studyUid = str(cr[0].dataset, '0020000D');
    const n = cr.filter((h) => str(h.dataset, '0020000D') === studyUid).length;
    const getDir = path.join(work, 'get');
    await import('node:fs/promises').then((fs) => fs.mkdir(getDir, { recursive: true }));
    const g = await run('getscu', ['-S', '-aet', 'GETSCU', '-aec', AE, '-od', getDir, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${studyUid}`, ...addr()]);
    expect(g.code, g.stderr).toBe(0);
    expect(readdirSync(getDir)).toHaveLength(n);

    const m = await run('movescu', ['-S', '-aet', 'MOVESCU', '-aec', AE, '-aem', 'DEST', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${studyUid}`, ...addr()]);
    expect(m.code, m.stderr).toBe(0);
    const received = await until(async () => (readdirSync(destDir).length >= n ? readdirSync(destDir) : undefined), `${n} files at the C-MOVE destination`);
    expect(received).toHaveLength(n);
    const unknown = await run('movescu', ['-S', '-aet', 'MOVESCU', '-aec', AE, '-aem', 'NOWHERE', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${studyUid}`, ...addr()]);
    expect(unknown.stderr + unknown.stdout).toMatch(/MoveDestinationUnknown/);
  });

  it('serves a Modality Worklist from ServiceRequests and turns MPPS into a Procedure', async () => {
    const patient = await fhir<Patient>('Patient', { method: 'POST', body: JSON.stringify({ resourceType: 'Patient', identifier: [{ system: 'urn:conflux:hl7v2:aa:HOSP', value: 'MWL-1' }], name: [{ family: 'Worklist', given: ['Wanda'] }], gender: 'female', birthDate: '1970-02-03' }) });
    const order = await fhir<ServiceRequest>('ServiceRequest', {
      method: 'POST',
      body: JSON.stringify({
        resourceType: 'ServiceRequest',
        status: 'active',
        intent: 'order',
        identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, system: 'urn:test:acc', value: 'ACC-77' }],
        code: { coding: [{ system: 'http://loinc.org', code: '24627-2', display: 'CT Chest' }, { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'CT' }], text: 'CT Chest' },
        subject: { reference: `Patient/${patient.id}` },
        occurrenceDateTime: '2030-06-01T09:30:00Z',
      }),
    });
    const wl = path.join(work, 'wl');
    await import('node:fs/promises').then((fs) => fs.mkdir(wl, { recursive: true }));
    const q = (dir: string, ...keys: string[]) =>
      run('findscu', ['-W', '-aet', 'FINDSCU', '-aec', AE, '-X', '-od', dir, '-k', 'PatientName', '-k', 'PatientID', '-k', 'IssuerOfPatientID', '-k', 'AccessionNumber', '-k', 'StudyInstanceUID', '-k', 'RequestedProcedureDescription', ...keys.flatMap((k) => ['-k', k]), ...addr()]);
    const r = await q(wl, '(0040,0100)[0].Modality=CT', '(0040,0100)[0].ScheduledStationAETitle', '(0040,0100)[0].ScheduledProcedureStepStartDate=20300101-20301231', '(0040,0100)[0].ScheduledProcedureStepStartTime');
    expect(r.code, r.stderr).toBe(0);
    const items = readdirSync(wl).map((f) => header(path.join(wl, f)).dataset);
    expect(items).toHaveLength(1);
    const item = items[0];
    expect(str(item, '00080050')).toBe('ACC-77');
    expect(str(item, '00100010')).toBe('Worklist^Wanda');
    expect(str(item, '00100020')).toBe('MWL-1');
    expect(str(item, '00100021')).toBe('HOSP');
    const sps = item['00400100'].Value![0] as Record<string, { Value?: unknown[] }>;
    expect(sps['00400001'].Value?.[0]).toBe('MODALITY1');
    expect(sps['00400002'].Value?.[0]).toBe('20300601');
    const studyUid = str(item, '0020000D');
    expect(studyUid).toMatch(/^2\.25\.\d+$/);

    const none = path.join(work, 'wl-none');
    await import('node:fs/promises').then((fs) => fs.mkdir(none, { recursive: true }));
    expect((await q(none, '(0040,0100)[0].Modality=MR')).code).toBe(0);
    expect((await q(none, '(0040,0100)[0].ScheduledProcedureStepStartDate=20290101-20291231')).code).toBe(0);
    expect((await q(none, '(0040,0100)[0].ScheduledStationAETitle=OTHER')).code).toBe(0);
    expect(readdirSync(none)).toHaveLength(0);

    // MPPS N-CREATE (IN PROGRESS) then N-SET (COMPLETED), with dcmjs-dimse's client.
    const mppsUid = `2.25.${BigInt('0x' + 'ab'.repeat(16)).toString()}`;
    const send = (request: InstanceType<typeof dimse.requests.Request>) =>
      new Promise<number>((resolve, reject) => {
        request.on('response', (res: InstanceType<typeof dimse.responses.Response>) => resolve(res.getStatus()));
        const client = new dimse.Client();
        client.on('networkError', reject);
        client.addRequest(request);
        client.send('127.0.0.1', port, 'MODALITY1', AE);
      });
    const create = new dimse.requests.NCreateRequest('1.2.840.10008.3.1.2.3.3', mppsUid);
    create.setDataset(
      new dimse.Dataset(
        {
          PatientID: 'MWL-1',
          IssuerOfPatientID: 'HOSP',
          PatientName: 'Worklist^Wanda',
          ScheduledStepAttributesSequence: [{ StudyInstanceUID: studyUid, AccessionNumber: 'ACC-77' }],
          PerformedProcedureStepStatus: 'IN PROGRESS',
          PerformedProcedureStepStartDate: '20300601',
          PerformedProcedureStepStartTime: '093500',
          Modality: 'CT',
        },
        '1.2.840.10008.1.2.1',
      ),
    );
    expect(await send(create)).toBe(0);
    const proc1 = await fhir<Bundle<Procedure>>(`Procedure?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${mppsUid}`)}`);
    expect(proc1.entry?.[0]?.resource?.status).toBe('in-progress');
    expect(proc1.entry?.[0]?.resource?.basedOn?.[0].reference).toBe(`ServiceRequest/${order.id}`);
    expect(proc1.entry?.[0]?.resource?.subject.reference).toBe(`Patient/${patient.id}`);

    const set = new dimse.requests.NSetRequest('1.2.840.10008.3.1.2.3.3', mppsUid);
    set.setDataset(new dimse.Dataset({ PerformedProcedureStepStatus: 'COMPLETED', PerformedProcedureStepEndDate: '20300601', PerformedProcedureStepEndTime: '100000' }, '1.2.840.10008.1.2.1'));
    expect(await send(set)).toBe(0);
    const proc2 = await fhir<Bundle<Procedure>>(`Procedure?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${mppsUid}`)}`);
    expect(proc2.entry).toHaveLength(1);
    expect(proc2.entry?.[0]?.resource?.status).toBe('completed');
    expect(proc2.entry?.[0]?.resource?.performedPeriod?.end).toBe('2030-06-01T10:00:00Z');
    // A completed step is final.
    const again = new dimse.requests.NSetRequest('1.2.840.10008.3.1.2.3.3', mppsUid);
    again.setDataset(new dimse.Dataset({ PerformedProcedureStepStatus: 'DISCONTINUED' }, '1.2.840.10008.1.2.1'));
    expect(await send(again)).toBe(0x0110);

    // The modality stores the study under the worklist's Study Instance UID: ImagingStudy.basedOn the order.
    const src = readFileSync(path.join(DATA, 'CT_small.dcm'));
    void src;
    const res = await fetch(`${server.url}/iid?requestType=STUDY&studyUID=${studyUid}`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toContain(studyUid);
  });
});
