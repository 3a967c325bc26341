/**
 * Modality Performed Procedure Step (PS3.4 F.7): N-CREATE starts a step, N-SET updates or ends it.
 * Each is mapped to one FHIR Procedure (identifier: the MPPS SOP Instance UID) linked to the
 * ServiceRequest of the scheduled step (by worklist Study Instance UID or accession number), written
 * through the repository in the same transaction as the step's own row; the DIMSE response follows
 * the commit. IN PROGRESS → in-progress, COMPLETED → completed, DISCONTINUED → stopped.
 */
import type { Procedure, ServiceRequest } from '@medplum/fhirtypes';
import { absentIfGone, ConfluxError, type Database, guardPatientIdentity, type Repository, searchIds, type SystemWriter, type Tx } from '../../src/index.js';
import { type DicomConfig, issuerToSystem } from './config.js';
import { dicomDateTime } from './imaging-study.js';
import { type DicomJson, str } from './part10.js';

/** An MPPS N-CREATE/N-SET refused with a DIMSE status. */
export class MppsError extends ConfluxError {
  constructor(
    readonly dimseStatus: number,
    message: string,
  ) {
    super('dicom-refused', message);
  }
}

const STATUS_MAP: Record<string, Procedure['status']> = { 'IN PROGRESS': 'in-progress', COMPLETED: 'completed', DISCONTINUED: 'stopped' };

export class MppsService {
  constructor(
    private readonly db: Database,
    private readonly repo: Repository,
    private readonly writer: SystemWriter,
    private readonly cfg: DicomConfig,
  ) {}

  async create(sopUid: string, attrs: DicomJson, sourceAe: string): Promise<string> {
    if (!sopUid) throw new MppsError(0x0120, 'N-CREATE without an Affected SOP Instance UID');
    const status = str(attrs, '00400252');
    if (status !== 'IN PROGRESS') throw new MppsError(0x0106, `Performed Procedure Step Status (0040,0252) must be IN PROGRESS on N-CREATE, not "${status}"`);
    return this.db.transaction(async (tx) => {
      const exists = await tx.query('SELECT 1 FROM dicom_mpps WHERE sop_uid = $1', [sopUid]);
      if (exists.rowCount) throw new MppsError(0x0111, `MPPS ${sopUid} already exists (duplicate SOP instance)`);
      const procedureId = await this.writeProcedure(tx, sopUid, attrs, sourceAe);
      await tx.query('INSERT INTO dicom_mpps (sop_uid, status, attrs, procedure_id) VALUES ($1, $2, $3, $4)', [sopUid, status, JSON.stringify(attrs), procedureId]);
      return procedureId;
    });
  }

  async set(sopUid: string, changes: DicomJson, sourceAe: string): Promise<string> {
    return this.db.transaction(async (tx) => {
      const r = await tx.query<{ status: string; attrs: DicomJson }>('SELECT status, attrs FROM dicom_mpps WHERE sop_uid = $1 FOR UPDATE', [sopUid]);
      const row = r.rows[0];
      if (!row) throw new MppsError(0x0112, `no MPPS ${sopUid} (N-CREATE it first)`);
      if (row.status !== 'IN PROGRESS') throw new MppsError(0x0110, `MPPS ${sopUid} is ${row.status} and may no longer be modified`);
      const merged = { ...row.attrs, ...changes };
      const status = str(merged, '00400252');
      if (!STATUS_MAP[status]) throw new MppsError(0x0106, `Performed Procedure Step Status "${status}" is not IN PROGRESS, COMPLETED or DISCONTINUED`);
      const procedureId = await this.writeProcedure(tx, sopUid, merged, sourceAe);
      await tx.query('UPDATE dicom_mpps SET status = $2, attrs = $3, procedure_id = $4, updated_at = now() WHERE sop_uid = $1', [sopUid, status, JSON.stringify(merged), procedureId]);
      return procedureId;
    });
  }

  private async findOrder(tx: Tx, attrs: DicomJson): Promise<string | undefined> {
    const steps = (attrs['00400270']?.Value ?? []) as DicomJson[];
    for (const step of steps) {
      const study = str(step, '0020000D');
      const acc = str(step, '00080050');
      const r = await tx.query<{ service_request_id: string }>(
        `SELECT service_request_id FROM dicom_worklist WHERE ($1 <> '' AND study_uid = $1) OR ($2 <> '' AND accession = $2) LIMIT 1`,
        [study, acc],
      );
      if (r.rows[0]) return r.rows[0].service_request_id;
      if (acc) {
        const ids = await searchIds(tx, 'ServiceRequest', [['identifier', acc]], 2);
        if (ids.length === 1) return ids[0];
      }
    }
    return undefined;
  }

  private async writeProcedure(tx: Tx, sopUid: string, attrs: DicomJson, sourceAe: string): Promise<string> {
    const status = STATUS_MAP[str(attrs, '00400252')] ?? 'unknown';
    const srId = await this.findOrder(tx, attrs);
    const sr = srId ? await this.repo.readResource<ServiceRequest>('ServiceRequest', srId, tx).catch(absentIfGone) : undefined;
    const start = dicomDateTime(str(attrs, '00400244'), str(attrs, '00400245'));
    const end = dicomDateTime(str(attrs, '00400250'), str(attrs, '00400251'));
    const entries: NonNullable<import('@medplum/fhirtypes').Bundle['entry']> = [];
    let subject = sr?.subject;
    if (!subject?.reference) {
      const pid = str(attrs, '00100020');
      if (!pid) throw new MppsError(0x0120, 'the step names no Patient ID (0010,0020) and matches no scheduled order');
      const system = issuerToSystem(str(attrs, '00100021') || this.cfg.defaultIssuer || sourceAe, '', '', this.cfg);
      entries.push({
        fullUrl: 'urn:uuid:6a0c6b9e-0000-4000-8000-000000000001',
        resource: { resourceType: 'Patient', identifier: [{ system, value: pid }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${encodeURIComponent(`${system}|${pid}`)}` },
      });
      subject = { reference: 'urn:uuid:6a0c6b9e-0000-4000-8000-000000000001' };
    }
    const description = str(attrs, '00400254') || sr?.code?.text;
    const procedure: Procedure = {
      resourceType: 'Procedure',
      identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:${sopUid}` }],
      status,
      subject: subject as Procedure['subject'],
      code: sr?.code ?? (description ? { text: description } : { text: 'Performed procedure step' }),
      ...(srId ? { basedOn: [{ reference: `ServiceRequest/${srId}` }] } : {}),
      ...(start ? { performedPeriod: { start, ...(end && status !== 'in-progress' ? { end } : {}) } } : {}),
      ...(str(attrs, '00400241') ? { location: { display: `${str(attrs, '00400241')}` } } : {}),
    };
    entries.push({ resource: procedure, request: { method: 'PUT', url: `Procedure?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${sopUid}`)}` } });
    // An N-SET naming another patient than the step's Procedure has (a changed Patient ID, a re-pointed order)
    // must not move the Procedure to that patient (DESIGN principle 5): refused, the step stays as it was.
    const guarded = await guardPatientIdentity(tx, { resourceType: 'Bundle', type: 'transaction', entry: entries }, 'refuse');
    if (guarded.conflicts.length) {
      const c = guarded.conflicts[0]!;
      const other = c.existingPatientIdentifiers.map((i) => i.value).filter(Boolean)[0];
      throw new MppsError(0x0110, `MPPS is another patient's${other ? ` (ID ${other})` : ''}: ${c.existing}`);
    }
    const written = await this.writer.transaction({ actor: 'dicom', entries: guarded.bundle.entry ?? [], tx });
    return written[entries.length - 1]!.id;
  }
}
