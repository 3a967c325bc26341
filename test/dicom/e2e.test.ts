/**
 * The imaging path end to end: ORM^O01 over MLLP → worklist entry found with `findscu -W` → `storescu`
 * of a series carrying that accession number and Study Instance UID → MPPS completed → ImagingStudy
 * linked to the order and the patient → IID redirect.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, ImagingStudy, Patient, Procedure, ServiceRequest } from '@medplum/fhirtypes';
import dimseModule from 'dcmjs-dimse';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { str } from '../../facades/dicom/part10.js';
import { DATA, dicomFiles, freePort, header, run } from './helpers.js';
import { until } from '../helpers/until.js';

const dimse = dimseModule as unknown as typeof import('dcmjs-dimse');

function orm(): string {
  const obr = new Array(28).fill('');
  obr[0] = 'OBR';
  obr[1] = '1';
  obr[2] = 'PL-E2E-1^RIS';
  obr[4] = '71020^Chest X-ray 2 views^C4';
  obr[18] = 'ACC-E2E-1';
  obr[24] = 'CR';
  obr[27] = '^^^20300601090000';
  return [
    'MSH|^~\\&|RIS|HOSP|CONFLUX|HOSP|20300601080000||ORM^O01|E2E-MSG-1|P|2.5',
    'PID|1||E2E-100^^^HOSP^MR||Endtoend^Eve||19800101|F',
    'PV1|1|O',
    'ORC|NW|PL-E2E-1^RIS|||SC',
    obr.join('|'),
  ].join('\r');
}

function sendMllp(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\x1c\r')) {
        sock.end();
        resolve(buf.replace(/^\x0b|\x1c\r$/g, ''));
      }
    });
    sock.on('error', reject);
    sock.write(`\x0b${message}\x1c\r`);
  });
}

describe.each(testDatabases())('imaging path end to end on %s', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let dicomPort: number;
  let mllpPort: number;
  const work = mkdtempSync(path.join(tmpdir(), 'conflux-e2e-'));
  const fhir = async <T>(p: string): Promise<T> => (await (await fetch(`${server.fhir}/${p}`)).json()) as T;

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    dicomPort = await freePort();
    mllpPort = await freePort();
    server = await startTestServer(db, { DICOM_PORT: String(dicomPort), MLLP_PORT: String(mllpPort), DICOM_ACCEPT_ANY_AE: 'true', DATA_DIR: path.join(work, 'data'), DICOM_VIEWER_URL: 'https://viewer.example/ohif/viewer?StudyInstanceUIDs={studyUID}' });
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  it('ORM^O01 → MWL → C-STORE → MPPS → ImagingStudy basedOn the order → IID', async () => {
    const ack = await sendMllp(mllpPort, orm());
    expect(ack).toMatch(/MSA\|AA\|E2E-MSG-1/);

    const wl = path.join(work, 'wl');
    mkdirSync(wl);
    const f = await run('findscu', ['-W', '-aet', 'CR1', '-aec', 'CONFLUX', '-X', '-od', wl, '-k', 'AccessionNumber', '-k', 'PatientID', '-k', 'IssuerOfPatientID', '-k', 'PatientName', '-k', 'StudyInstanceUID', '-k', '(0040,0100)[0].ScheduledProcedureStepStartDate=20300601', '-k', '(0040,0100)[0].Modality', '127.0.0.1', String(dicomPort)]);
    expect(f.code, f.stderr).toBe(0);
    const items = readdirSync(wl).map((x) => header(path.join(wl, x)).dataset);
    expect(items).toHaveLength(1);
    const item = items[0];
    expect(str(item, '00080050')).toBe('ACC-E2E-1');
    expect(str(item, '00100020')).toBe('E2E-100');
    expect(str(item, '00100021')).toBe('HOSP');
    const studyUid = str(item, '0020000D');
    // OBR-24 (CR) made it a CR worklist entry: a modality query for CR finds it, one for MR does not.
    for (const [modality, expected] of [['CR', 1], ['MR', 0]] as const) {
      const dir = path.join(work, `wl-${modality}`);
      mkdirSync(dir);
      const q = await run('findscu', ['-W', '-aet', 'CR1', '-aec', 'CONFLUX', '-X', '-od', dir, '-k', 'AccessionNumber', '-k', `(0040,0100)[0].Modality=${modality}`, '127.0.0.1', String(dicomPort)]);
      expect(q.code, q.stderr).toBe(0);
      expect(readdirSync(dir), `worklist entries for ${modality}`).toHaveLength(expected);
    }

    // The modality acquires a series with the worklist's attributes.
    const cr = dicomFiles(path.join(DATA, 'series-cr'));
    const firstStudy = str(header(cr[0]).dataset, '0020000D');
    const series = cr.filter((x) => str(header(x).dataset, '0020000D') === firstStudy);
    const acq = path.join(work, 'acq');
    mkdirSync(acq);
    const copies = series.map((src, i) => {
      const dst = path.join(acq, `img${i}.dcm`);
      copyFileSync(src, dst);
      return dst;
    });
    const mod = await run('dcmodify', ['-nb', '-i', `(0020,000d)=${studyUid}`, '-i', '(0008,0050)=ACC-E2E-1', '-i', '(0010,0020)=E2E-100', '-i', '(0010,0021)=HOSP', '-i', '(0010,0010)=Endtoend^Eve', ...copies]);
    expect(mod.code, mod.stderr).toBe(0);

    const mppsUid = '2.25.1234567890123456789012345';
    const send = (request: InstanceType<typeof dimse.requests.Request>) =>
      new Promise<number>((resolve, reject) => {
        request.on('response', (res: InstanceType<typeof dimse.responses.Response>) => resolve(res.getStatus()));
        const client = new dimse.Client();
        client.on('networkError', reject);
        client.addRequest(request);
        client.send('127.0.0.1', dicomPort, 'CR1', 'CONFLUX');
      });
    const create = new dimse.requests.NCreateRequest('1.2.840.10008.3.1.2.3.3', mppsUid);
    create.setDataset(
      new dimse.Dataset(
        { PatientID: 'E2E-100', IssuerOfPatientID: 'HOSP', ScheduledStepAttributesSequence: [{ StudyInstanceUID: studyUid, AccessionNumber: 'ACC-E2E-1' }], PerformedProcedureStepStatus: 'IN PROGRESS', PerformedProcedureStepStartDate: '20300601', PerformedProcedureStepStartTime: '090500', Modality: 'CR' },
        '1.2.840.10008.1.2.1',
      ),
    );
    expect(await send(create)).toBe(0);

    const s = await run('storescu', ['-aet', 'CR1', '-aec', 'CONFLUX', '127.0.0.1', String(dicomPort), ...copies]);
    expect(s.code, s.stderr).toBe(0);

    const set = new dimse.requests.NSetRequest('1.2.840.10008.3.1.2.3.3', mppsUid);
    set.setDataset(new dimse.Dataset({ PerformedProcedureStepStatus: 'COMPLETED', PerformedProcedureStepEndDate: '20300601', PerformedProcedureStepEndTime: '091500' }, '1.2.840.10008.1.2.1'));
    expect(await send(set)).toBe(0);

    const order = (await fhir<Bundle<ServiceRequest>>('ServiceRequest?identifier=ACC-E2E-1')).entry?.[0]?.resource as ServiceRequest;
    expect(order).toBeDefined();
    const procedure = (await fhir<Bundle<Procedure>>(`Procedure?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${mppsUid}`)}`)).entry?.[0]?.resource as Procedure;
    expect(procedure.status).toBe('completed');
    expect(procedure.basedOn?.[0].reference).toBe(`ServiceRequest/${order.id}`);

    const study = await until(async () => {
      const b = await fhir<Bundle<ImagingStudy>>(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`);
      const r = b.entry?.[0]?.resource;
      return r && r.numberOfInstances === copies.length ? r : undefined;
    }, 'the ImagingStudy with every copy');
    expect(study.basedOn?.[0].reference).toBe(`ServiceRequest/${order.id}`);
    // The same Patient the ORM created: PatientID + issuer HOSP map to the HL7 facade's identifier system.
    expect(study.subject.reference).toBe(order.subject?.reference);
    const patient = await fhir<Patient>(study.subject.reference as string);
    expect(patient.identifier?.some((i) => i.system === 'urn:conflux:hl7v2:aa:HOSP' && i.value === 'E2E-100')).toBe(true);

    const iid = await fetch(`${server.url}/iid?requestType=STUDY&studyUID=${studyUid}`, { redirect: 'manual' });
    expect(iid.status).toBe(302);
    expect(iid.headers.get('location')).toBe(`https://viewer.example/ohif/viewer?StudyInstanceUIDs=${studyUid}`);
  });
});
