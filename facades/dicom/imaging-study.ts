/**
 * Keeps one FHIR ImagingStudy per DICOM study current, from the index. Studies are marked dirty in the
 * instance's own transaction; `flush` turns each dirty study into a FHIR transaction Bundle (Patient
 * conditional create, Endpoint, ImagingStudy conditional update, basedOn the ServiceRequest found by
 * accession number or worklist Study Instance UID) through the repository, the one write path.
 * Batching per study keeps a 2,000-instance study from writing 2,000 ImagingStudy versions.
 */
import type { BundleEntry, ImagingStudy, ImagingStudySeries, Patient } from '@medplum/fhirtypes';
import { ConfluxError, type Database, guardPatientIdentity, type Logger, type SystemWriter, type Tx } from '../../src/index.js';
import { type DicomConfig, issuerToSystem } from './config.js';
import { type DicomJson, str } from './part10.js';
import { patientIdentity } from './patient-identity.js';

export const DICOM_UID_SYSTEM = 'urn:dicom:uid';
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ENDPOINT_ID_SYSTEM = 'urn:conflux:dicom:endpoint';

interface StudyRow {
  study_uid: string;
  patient_id: string;
  issuer: string;
  patient_name: string;
  patient_birth_date: string;
  patient_sex: string;
  study_date: string;
  study_time: string;
  accession: string;
  description: string;
  attrs: DicomJson;
  change_seq: string | number;
}

interface SeriesRow {
  series_uid: string;
  modality: string;
  series_number: number | null;
  description: string;
  body_part: string;
  attrs: DicomJson;
}

export function dicomDateTime(date: string, time: string): string | undefined {
  const d = /^(\d{4})(\d{2})(\d{2})$/.exec(date.trim());
  if (!d) return undefined;
  const t = /^(\d{2})(\d{2})?(\d{2})?/.exec(time.trim());
  if (!t) return `${d[1]}-${d[2]}-${d[3]}`;
  return `${d[1]}-${d[2]}-${d[3]}T${t[1]}:${t[2] ?? '00'}:${t[3] ?? '00'}Z`;
}

function personName(dicom: string): Patient['name'] {
  if (!dicom) return undefined;
  const [family, given, middle, prefix, suffix] = dicom.split('=')[0].split('^');
  const g = [given, middle].filter((x) => x && x.trim()).map((x) => x.trim());
  const name = {
    ...(family?.trim() ? { family: family.trim() } : {}),
    ...(g.length ? { given: g } : {}),
    ...(prefix?.trim() ? { prefix: [prefix.trim()] } : {}),
    ...(suffix?.trim() ? { suffix: [suffix.trim()] } : {}),
  };
  return Object.keys(name).length ? [name] : undefined;
}

/** The study's ImagingStudy belongs to another Patient than the index says: the sync refuses to move it. */
export class StudyIdentityConflict extends ConfluxError {
  changeSeq?: string | number;
  constructor(studyUid: string, existing: string, existingPatient: string) {
    super('identity-conflict', `${existing} (study ${studyUid}) belongs to ${existingPatient}, not to the patient the DICOM index names; not moved, resolve it by hand`);
  }
}

export class ImagingStudySync {
  private running = new Map<string, Promise<void>>();
  private endpointId?: string;

  constructor(
    private readonly db: Database,
    private readonly writer: SystemWriter,
    private readonly cfg: DicomConfig,
    private readonly dicomwebBase: () => string,
    private readonly log: Logger,
  ) {}

  /**
   * Patient identifier for an instance's PatientID/issuer (the same rule the HL7 facade uses). The identity it
   * starts from is the one the store's conflict check compares (patient-identity.ts), so both agree on "same patient".
   */
  patientIdentifier(row: { patient_id: string; issuer: string; attrs: DicomJson }, sourceAe = ''): { system: string; value: string } | undefined {
    const id = patientIdentity(row, this.cfg.defaultIssuer, sourceAe);
    if (!id) return undefined;
    return { system: issuerToSystem(id.issuer, id.universalId, id.universalIdType, this.cfg), value: id.patientId };
  }

  /** Syncs every dirty study (or the given ones); never throws — failures stay dirty for the next run. */
  async flush(studyUids?: string[]): Promise<void> {
    const uids =
      studyUids ??
      (await this.db.query<{ study_uid: string }>('SELECT study_uid FROM dicom_study WHERE fhir_dirty ORDER BY updated_at LIMIT 500')).rows.map((r) => r.study_uid);
    for (const uid of uids) {
      // One sync per study at a time in this process; a second request waits and re-runs (new instances).
      const prev = this.running.get(uid);
      const next = (prev ?? Promise.resolve())
        .then(() => this.syncOne(uid))
        .catch(async (err) => {
          if (err instanceof StudyIdentityConflict) {
            // Retrying cannot help until someone decides: stop re-syncing this version of the study (a new
            // instance marks it dirty again and it is checked again) and say so once.
            this.log.error(`ImagingStudy sync of ${uid} refused: ${err.message}`);
            await this.db
              .query('UPDATE dicom_study SET fhir_dirty = false WHERE study_uid = $1 AND change_seq = $2', [uid, err.changeSeq ?? -1])
              .catch((e: Error) => this.log.warn(`ImagingStudy sync of ${uid}: could not stop re-syncing it (${e.message}); it is refused again next time`));
            return;
          }
          // A cached Endpoint that was deleted meanwhile would fail every sync: look it up again next time.
          this.endpointId = undefined;
          this.log.error(`ImagingStudy sync of ${uid} failed: ${(err as Error).message}`);
        });
      this.running.set(uid, next);
      await next;
      if (this.running.get(uid) === next) this.running.delete(uid);
    }
  }

  private async syncOne(studyUid: string): Promise<void> {
    await this.db.transaction((tx) => this.write(tx, studyUid, true));
  }

  /**
   * Syncs one study on the caller's open transaction `tx` (filing a held instance as new: the ImagingStudy commits
   * with the resolution). An Endpoint created here is not remembered, since `tx` may still roll back. Throws what
   * the sync would log (StudyIdentityConflict, FHIR errors); the study stays dirty then.
   */
  async syncInTransaction(tx: Tx, studyUid: string): Promise<{ imagingStudy?: string; patient?: string }> {
    return this.write(tx, studyUid, false);
  }

  private async write(tx: Tx, studyUid: string, cacheEndpoint: boolean): Promise<{ imagingStudy?: string; patient?: string }> {
    // The study row is locked before its parts are read: two workers syncing one study take turns, and the later one
    // sees (and writes) the newer instances, so an older view never overwrites a newer ImagingStudy.
    const s = (await tx.query<StudyRow>('SELECT * FROM dicom_study WHERE study_uid = $1 FOR UPDATE', [studyUid])).rows[0];
    if (!s) return {};
    const series = (await tx.query<SeriesRow>('SELECT * FROM dicom_series WHERE study_uid = $1 ORDER BY series_number NULLS LAST, series_uid', [studyUid])).rows;
    const instances = (
      await tx.query<{ series_uid: string; sop_uid: string; sop_class_uid: string; instance_number: number | null; source_ae: string }>(
        'SELECT series_uid, sop_uid, sop_class_uid, instance_number, source_ae FROM dicom_instance WHERE study_uid = $1 ORDER BY instance_number NULLS LAST, sop_uid',
        [studyUid],
      )
    ).rows;
    const bySeries = new Map<string, typeof instances>();
    for (const i of instances) bySeries.set(i.series_uid, [...(bySeries.get(i.series_uid) ?? []), i]);

    const entries: BundleEntry[] = [];
    const pid = this.patientIdentifier(s, instances[0]?.source_ae ?? '');
    const patient: Patient = {
      resourceType: 'Patient',
      identifier: [pid ?? { system: 'urn:conflux:dicom:unidentified-study', value: studyUid }],
      name: personName(s.patient_name),
      gender: ({ M: 'male', F: 'female', O: 'other' } as Record<string, Patient['gender']>)[s.patient_sex.toUpperCase()],
      birthDate: dicomDateTime(s.patient_birth_date, '')?.slice(0, 10),
    };
    if (!patient.name) delete patient.name;
    if (!patient.gender) delete patient.gender;
    if (!patient.birthDate) delete patient.birthDate;
    const key = patient.identifier![0];
    entries.push({
      fullUrl: 'urn:uuid:5f1c0a1e-0000-4000-8000-000000000001',
      resource: patient,
      request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${encodeURIComponent(`${key.system}|${key.value}`)}` },
    });
    let endpointRef = this.endpointId ? `Endpoint/${this.endpointId}` : 'urn:uuid:5f1c0a1e-0000-4000-8000-000000000002';
    if (!this.endpointId) {
      entries.push({
        fullUrl: endpointRef,
        resource: {
          resourceType: 'Endpoint',
          identifier: [{ system: ENDPOINT_ID_SYSTEM, value: 'wado-rs' }],
          status: 'active',
          name: 'Conflux DICOMweb (WADO-RS)',
          connectionType: { system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type', code: 'dicom-wado-rs' },
          payloadType: [{ text: 'DICOM' }],
          payloadMimeType: ['application/dicom'],
          address: this.dicomwebBase(),
        },
        request: { method: 'POST', url: 'Endpoint', ifNoneExist: `identifier=${ENDPOINT_ID_SYSTEM}|wado-rs` },
      });
    }
    const basedOn = await this.findOrders(tx, studyUid, s.accession);
    const seriesOut: ImagingStudySeries[] = series.map((se) => {
      const list = bySeries.get(se.series_uid) ?? [];
      const started = dicomDateTime(str(se.attrs, '00080021'), str(se.attrs, '00080031'));
      const out: ImagingStudySeries = {
        uid: se.series_uid,
        modality: { system: DCM, code: se.modality || 'OT' },
        numberOfInstances: list.length,
        instance: list.map((i) => ({
          uid: i.sop_uid,
          sopClass: { system: 'urn:ietf:rfc:3986', code: `urn:oid:${i.sop_class_uid}` },
          ...(i.instance_number !== null ? { number: i.instance_number } : {}),
        })),
      };
      if (se.series_number !== null) out.number = se.series_number;
      if (se.description) out.description = se.description;
      if (se.body_part) out.bodySite = { system: 'http://snomed.info/sct', display: se.body_part };
      if (started) out.started = started;
      return out;
    });
    const modalities = [...new Set(series.map((se) => se.modality || 'OT'))];
    const study: ImagingStudy = {
      resourceType: 'ImagingStudy',
      identifier: [
        { system: DICOM_UID_SYSTEM, value: `urn:oid:${studyUid}` },
        ...(s.accession ? [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, value: s.accession }] : []),
      ],
      status: 'available',
      subject: { reference: 'urn:uuid:5f1c0a1e-0000-4000-8000-000000000001' },
      modality: modalities.map((m) => ({ system: DCM, code: m })),
      numberOfSeries: series.length,
      numberOfInstances: instances.length,
      endpoint: [{ reference: endpointRef }],
      series: seriesOut,
    };
    const started = dicomDateTime(s.study_date, s.study_time);
    if (started) study.started = started;
    if (s.description) study.description = s.description;
    if (basedOn.length) study.basedOn = basedOn.map((id) => ({ reference: `ServiceRequest/${id}` }));
    entries.push({
      resource: study,
      request: { method: 'PUT', url: `ImagingStudy?identifier=${encodeURIComponent(`${DICOM_UID_SYSTEM}|urn:oid:${studyUid}`)}` },
    });
    // The index never lets a study change patient (store.ts), but the FHIR side may have been changed since
    // (a Patient identifier edited, an ImagingStudy re-pointed through REST): the sync never moves an
    // ImagingStudy to another Patient either; it reports the study and leaves the FHIR side as it is.
    const guarded = await guardPatientIdentity(tx, { resourceType: 'Bundle', type: 'transaction', entry: entries }, 'refuse');
    if (guarded.conflicts.length) {
      const e = new StudyIdentityConflict(studyUid, guarded.conflicts[0]!.existing, guarded.conflicts[0]!.existingPatient);
      e.changeSeq = s.change_seq;
      throw e;
    }
    const written = await this.writer.transaction({ actor: 'dicom', entries: guarded.bundle.entry ?? [], tx });
    // Entries: the Patient, the Endpoint when none is cached, the ImagingStudy last.
    if (!this.endpointId && cacheEndpoint) this.endpointId = written[1]?.id;
    const imagingStudy = written[entries.length - 1]!;
    await tx.query('UPDATE dicom_study SET imaging_study_id = $2, fhir_dirty = (change_seq <> $3) WHERE study_uid = $1', [studyUid, imagingStudy.id, s.change_seq]);
    return { imagingStudy: imagingStudy.reference, patient: written[0]!.reference };
  }

  /** ServiceRequests this study fulfils: the worklist entry that issued its Study Instance UID, or the accession number. */
  private async findOrders(tx: Tx, studyUid: string, accession: string): Promise<string[]> {
    const r = await tx.query<{ service_request_id: string }>(
      `SELECT service_request_id FROM dicom_worklist WHERE study_uid = $1 OR ($2 <> '' AND accession = $2) ORDER BY service_request_id`,
      [studyUid, accession],
    );
    return [...new Set(r.rows.map((x) => x.service_request_id))];
  }
}
