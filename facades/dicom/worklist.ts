/**
 * Modality Worklist from ServiceRequests. A repository change hook mirrors every imaging ServiceRequest
 * (created through FHIR or an ORM^O01) into `dicom_worklist` inside the writing transaction, so the
 * worklist is never out of step with FHIR and a C-FIND MWL is one indexed query plus Patient reads.
 *
 * What makes a ServiceRequest an imaging order: an accession number (identifier type ACSN), the SNOMED
 * "Imaging" category (363679005), or a DICOM modality code (DCM) in code/category/orderDetail.
 * Scheduled station AE: ServiceRequest.locationCode with system urn:conflux:dicom:ae-title, else the
 * first configured AE (DICOM_AES_FILE) listing the order's modality.
 */
import { createHash } from 'node:crypto';
import type { CodeableConcept, Patient, ServiceRequest } from '@medplum/fhirtypes';
import { absentIfGone, type ChangeEvent, type Database, type Repository, searchIds, Sql, type Tx } from '../../src/index.js';
import { type DicomConfig, systemToIssuer } from './config.js';
import { matches, project } from './matching.js';
import type { DicomJson } from './part10.js';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
export const AE_TITLE_SYSTEM = 'urn:conflux:dicom:ae-title';

export interface WorklistRow {
  service_request_id: string;
  patient_ref: string;
  accession: string;
  modality: string;
  station_ae: string;
  start_date: string;
  start_time: string;
  study_uid: string;
  status: string;
  procedure_code: string;
  procedure_text: string;
}

/** A stable Study Instance UID for an order (2.25 + the 128-bit id), handed to the modality by the worklist. */
export function studyUidFor(sr: ServiceRequest): string {
  const own = sr.identifier?.find((i) => i.system === 'urn:dicom:uid')?.value;
  if (own) return own.replace(/^urn:oid:/, '');
  const hex = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(sr.id ?? '')
    ? (sr.id as string).replace(/-/g, '')
    : createHash('sha256').update(sr.id ?? '').digest('hex').slice(0, 32);
  return `2.25.${BigInt(`0x${hex}`).toString()}`;
}

function codings(...ccs: Array<CodeableConcept | CodeableConcept[] | undefined>) {
  return ccs.flatMap((c) => (Array.isArray(c) ? c : c ? [c] : [])).flatMap((c) => c.coding ?? []);
}

function dicomDate(iso: string | undefined): { date: string; time: string } {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?)?/.exec(iso ?? '');
  if (!m) return { date: '', time: '' };
  return { date: `${m[1]}${m[2]}${m[3]}`, time: m[4] ? `${m[4]}${m[5]}${m[6] ?? '00'}` : '' };
}

export function worklistRow(sr: ServiceRequest, cfg: DicomConfig): WorklistRow | undefined {
  const accession = sr.identifier?.find((i) => i.type?.coding?.some((c) => c.code === 'ACSN'))?.value ?? '';
  const all = codings(sr.code, sr.category, sr.orderDetail);
  const modality = all.find((c) => c.system === DCM)?.code ?? '';
  const imaging = !!accession || !!modality || codings(sr.category).some((c) => c.code === '363679005');
  if (!imaging || !sr.id) return undefined;
  const ae =
    codings(sr.locationCode).find((c) => c.system === AE_TITLE_SYSTEM)?.code ??
    (modality ? cfg.aes.find((a) => a.modalities?.some((m) => m.toUpperCase() === modality.toUpperCase()))?.aeTitle : undefined) ??
    '';
  const when = dicomDate(sr.occurrenceDateTime ?? sr.occurrencePeriod?.start ?? sr.authoredOn);
  const proc = sr.code?.coding?.find((c) => c.system !== DCM) ?? sr.code?.coding?.[0];
  return {
    service_request_id: sr.id,
    patient_ref: sr.subject?.reference ?? '',
    accession,
    modality,
    station_ae: ae,
    start_date: when.date,
    start_time: when.time,
    study_uid: studyUidFor(sr),
    status: sr.status,
    procedure_code: proc?.code ?? '',
    procedure_text: sr.code?.text ?? proc?.display ?? proc?.code ?? '',
  };
}

export async function upsertWorklist(q: Tx, row: WorklistRow): Promise<void> {
  await q.query(
    `INSERT INTO dicom_worklist (service_request_id, patient_ref, accession, modality, station_ae, start_date, start_time, study_uid, status, procedure_code, procedure_text)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (service_request_id) DO UPDATE SET patient_ref = EXCLUDED.patient_ref, accession = EXCLUDED.accession,
       modality = EXCLUDED.modality, station_ae = EXCLUDED.station_ae, start_date = EXCLUDED.start_date, start_time = EXCLUDED.start_time,
       study_uid = EXCLUDED.study_uid, status = EXCLUDED.status, procedure_code = EXCLUDED.procedure_code, procedure_text = EXCLUDED.procedure_text`,
    [row.service_request_id, row.patient_ref, row.accession, row.modality, row.station_ae, row.start_date, row.start_time, row.study_uid, row.status, row.procedure_code, row.procedure_text],
  );
}

/** The change hook: runs inside every repository write's transaction. */
export function worklistHook(cfg: DicomConfig) {
  return async (tx: Tx, change: ChangeEvent): Promise<void> => {
    if (change.resourceType !== 'ServiceRequest') return;
    const row = change.resource ? worklistRow(change.resource as ServiceRequest, cfg) : undefined;
    if (row) await upsertWorklist(tx, row);
    else await tx.query('DELETE FROM dicom_worklist WHERE service_request_id = $1', [change.id]);
  };
}

/** Mirrors ServiceRequests written before this facade was installed (idempotent, at start). */
export async function backfillWorklist(db: Database, repo: Repository, cfg: DicomConfig): Promise<number> {
  const ids = await searchIds(db, 'ServiceRequest', [['status', 'active']], 10_000);
  let n = 0;
  for (const id of ids) {
    const sr = await repo.readResource<ServiceRequest>('ServiceRequest', id).catch(absentIfGone);
    const row = sr && worklistRow(sr, cfg);
    if (row) {
      await upsertWorklist(db, row);
      n++;
    }
  }
  return n;
}

const el = (vr: string, v: unknown) => (v === '' || v === undefined || v === null ? { vr } : { vr, Value: [v] });

function patientName(p: Patient | undefined): string {
  const n = p?.name?.find((x) => x.use === 'official') ?? p?.name?.[0];
  if (!n) return '';
  return [n.family ?? '', (n.given ?? [])[0] ?? '', (n.given ?? []).slice(1).join(' '), (n.prefix ?? []).join(' '), (n.suffix ?? []).join(' ')].join('^').replace(/\^+$/, '');
}

/** The full worklist item (PS3.4 K.6) for one order. */
export function worklistItem(row: WorklistRow, patient: Patient | undefined, cfg: DicomConfig): DicomJson {
  const pid = patient?.identifier?.find((i) => i.type?.coding?.some((c) => c.code === 'MR')) ?? patient?.identifier?.[0];
  return {
    '00080050': el('SH', row.accession),
    '00080090': { vr: 'PN' },
    '00100010': patientName(patient) ? { vr: 'PN', Value: [{ Alphabetic: patientName(patient) }] } : { vr: 'PN' },
    '00100020': el('LO', pid?.value ?? ''),
    '00100021': el('LO', systemToIssuer(pid?.system, cfg)),
    '00100030': el('DA', (patient?.birthDate ?? '').replace(/-/g, '')),
    '00100040': el('CS', ({ male: 'M', female: 'F', other: 'O' } as Record<string, string>)[patient?.gender ?? ''] ?? ''),
    '0020000D': el('UI', row.study_uid),
    '00321060': el('LO', row.procedure_text),
    '00321064': row.procedure_code ? { vr: 'SQ', Value: [{ '00080100': el('SH', row.procedure_code), '00080104': el('LO', row.procedure_text) }] } : { vr: 'SQ' },
    '00400100': {
      vr: 'SQ',
      Value: [
        {
          '00080060': el('CS', row.modality),
          '00400001': el('AE', row.station_ae),
          '00400002': el('DA', row.start_date),
          '00400003': el('TM', row.start_time),
          '00400007': el('LO', row.procedure_text),
          '00400009': el('SH', row.accession || row.service_request_id.slice(0, 16)),
          '00400020': el('CS', 'SCHEDULED'),
        },
      ],
    },
    '00401001': el('SH', row.accession || row.service_request_id.slice(0, 16)),
    '00401003': { vr: 'SH' },
  };
}

function first(query: DicomJson, tag: string, sub?: string): string {
  const e = sub ? ((query[tag]?.Value?.[0] as DicomJson | undefined)?.[sub]) : query[tag];
  const v = e?.Value?.[0];
  return typeof v === 'string' ? v.trim() : '';
}

/** C-FIND MWL: SQL narrows by modality, station AE, date and accession; the rest is matched per item. */
export async function findWorklist(db: Database, repo: Repository, cfg: DicomConfig, query: DicomJson, limit = 1000): Promise<DicomJson[]> {
  const where = [`status = 'active'`];
  const sql = new Sql();
  const modality = first(query, '00400100', '00080060');
  const ae = first(query, '00400100', '00400001');
  const date = first(query, '00400100', '00400002');
  const accession = first(query, '00080050');
  if (modality && !/[*?]/.test(modality)) where.push(`modality = ${sql.p(modality)}`);
  if (ae && !/[*?]/.test(ae)) where.push(`station_ae = ${sql.p(ae)}`);
  if (accession && !/[*?]/.test(accession)) where.push(`accession = ${sql.p(accession)}`);
  if (date && !/[*?]/.test(date)) {
    const [lo, hi] = date.includes('-') ? date.split('-') : [date, date];
    if (lo) where.push(`start_date >= ${sql.p(lo.trim())}`);
    if (hi) where.push(`start_date <= ${sql.p(hi.trim())}`);
  }
  const rows = (await db.query<WorklistRow>(`SELECT * FROM dicom_worklist WHERE ${where.join(' AND ')} ORDER BY start_date, start_time, service_request_id LIMIT ${limit * 4}`, sql.params)).rows;
  const out: DicomJson[] = [];
  for (const row of rows) {
    const m = /^Patient\/(.+)$/.exec(row.patient_ref);
    const patient = m ? await repo.readResource<Patient>('Patient', m[1]).catch(absentIfGone) : undefined;
    const item = worklistItem(row, patient, cfg);
    if (matches(query, item)) out.push(project(query, item));
    if (out.length >= limit) break;
  }
  return out;
}
