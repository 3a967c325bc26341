/** C-MOVE and C-GET: which instances a retrieve identifier selects, and sending them as C-STOREs. */
import type { Readable } from 'node:stream';
import type { DicomConfig, KnownAe } from '../config.js';
import { IngestError, STATUS } from '../failure.js';
import type { DicomJson } from '../part10.js';
import { str } from '../part10.js';
import type { DicomServices } from '../services.js';
import type { IndexedInstanceRow } from '../store.js';
import { dimse } from './scp.js';

/** Instances selected by the unique keys of a retrieve identifier (study, series, SOP instance UIDs; or patient). */
export async function retrieveInstances(svc: DicomServices, query: DicomJson): Promise<IndexedInstanceRow[]> {
  const studyUid = str(query, '0020000D');
  const seriesUid = str(query, '0020000E');
  const sopUids = (query['00080018']?.Value ?? []).map(String).filter(Boolean);
  const patientId = str(query, '00100020');
  if (sopUids.length) {
    const rows: IndexedInstanceRow[] = [];
    for (const uid of sopUids) rows.push(...(await svc.store.instances({ sopUid: uid })));
    return rows;
  }
  if (seriesUid) return svc.store.instances({ seriesUid });
  if (studyUid) {
    const rows: IndexedInstanceRow[] = [];
    for (const uid of studyUid.split('\\')) rows.push(...(await svc.store.instances({ studyUid: uid })));
    return rows;
  }
  if (patientId) {
    const studies = await svc.db.query<{ study_uid: string }>('SELECT study_uid FROM dicom_study WHERE patient_id = $1', [patientId]);
    const rows: IndexedInstanceRow[] = [];
    for (const s of studies.rows) rows.push(...(await svc.store.instances({ studyUid: s.study_uid })));
    return rows;
  }
  throw new IngestError(STATUS.cannotUnderstand, 'the retrieve identifier names no Study, Series or SOP Instance UID, nor a Patient ID');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** A stored Part 10 blob as a dcmjs-dimse Dataset in its stored transfer syntax (one instance in memory at a time). */
export async function loadDataset(svc: DicomServices, row: IndexedInstanceRow): Promise<InstanceType<typeof dimse.Dataset>> {
  const file = await readAll(await svc.store.blobs.get(row.blob_key));
  const metaLength = file.readUInt32LE(140);
  return new dimse.Dataset(file.subarray(144 + metaLength), row.transfer_syntax);
}

/** Opens one association to `dest` and C-STOREs every row, reporting each outcome. */
export async function sendToAe(svc: DicomServices, cfg: DicomConfig, dest: KnownAe, rows: IndexedInstanceRow[], onResult: (ok: boolean) => void): Promise<void> {
  if (rows.length === 0) return;
  const client = new dimse.Client();
  const pending: Array<Promise<void>> = [];
  for (const row of rows) {
    const ds = await loadDataset(svc, row);
    const req = new dimse.requests.CStoreRequest(ds);
    pending.push(
      new Promise<void>((resolve) => {
        let settled = false;
        const settle = (ok: boolean) => {
          if (settled) return;
          settled = true;
          onResult(ok);
          resolve();
        };
        req.on('response', (r: InstanceType<typeof dimse.responses.CStoreResponse>) => settle(r.getStatus() === 0 || (r.getStatus() & 0xf000) === 0xb000));
        req.on('done', () => settle(false));
        client.on('closed', () => settle(false));
      }),
    );
    client.addRequest(req);
  }
  await new Promise<void>((resolve) => {
    client.on('networkError', () => resolve());
    client.on('closed', () => resolve());
    client.on('associationRejected', () => resolve());
    client.send(dest.host as string, dest.port as number, cfg.aeTitle, dest.aeTitle, { connectTimeout: 10_000, associationTimeout: 30_000, pduTimeout: 30_000 });
  });
  await Promise.all(pending);
}
