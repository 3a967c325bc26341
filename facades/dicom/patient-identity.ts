/**
 * Which patient a DICOM study belongs to, for the identity-conflict check (docs/design.md principle 5): a Study,
 * Series or SOP Instance UID that is already indexed under another patient never moves to the patient an
 * incoming instance names.
 *
 * "Same patient" is exactly "maps to the same FHIR Patient identifier" (what ImagingStudySync files the
 * study under), so the index and FHIR can never disagree about it:
 *  - Patient ID (0010,0020) equal, and the assigning authority equal: Issuer of Patient ID (0010,0021), or
 *    the Issuer of Patient ID Qualifiers (0010,0024) universal entity id and its type, or — when an instance
 *    names neither — DICOM_DEFAULT_ISSUER, else the calling AE title. So without a configured default issuer,
 *    the same bare Patient ID from two AEs is two patients (as it already was in FHIR).
 *  - An empty Patient ID is the study's own unidentified patient (FHIR: `urn:conflux:dicom:unidentified-study|
 *    <Study UID>`): an unidentified instance may join only a study that is unidentified too, and an identified
 *    instance may not join an unidentified study (that would put the unidentified images on a named chart).
 *    Both are refused and held; the operator or the modality sets the right Patient ID.
 * Names, birth dates and sex are not part of identity: a same-ID instance with a corrected name is a correction.
 */
import type { DicomJson } from './part10.js';
import { str } from './part10.js';

export interface PatientIdentity {
  patientId: string;
  /** The assigning authority as ImagingStudySync uses it ('' when only qualifiers name it). */
  issuer: string;
  universalId: string;
  universalIdType: string;
}

const SEP = '\u001f';

/** The identity an instance's (or a study row's) attributes name; undefined for an empty Patient ID. */
export function patientIdentity(
  row: { patient_id: string; issuer: string; attrs: DicomJson },
  defaultIssuer: string | undefined,
  sourceAe: string,
): PatientIdentity | undefined {
  if (!row.patient_id) return undefined;
  const q = row.attrs['00100024']?.Value?.[0] as DicomJson | undefined;
  return {
    patientId: row.patient_id,
    issuer: row.issuer || (q ? '' : (defaultIssuer ?? sourceAe)),
    universalId: str(q, '00400032'),
    universalIdType: str(q, '00400033'),
  };
}

/** A comparable text of `patientIdentity`; its SQL twin is `STUDY_PATIENT_KEY_SQL`. */
export function patientKey(id: PatientIdentity | undefined, studyUid: string): string {
  if (!id) return `unidentified:${studyUid}`;
  return [id.patientId, id.issuer, id.universalId, id.universalIdType].join(SEP);
}

/**
 * `patientKey` of a dicom_study row aliased `s`, in SQL, with `$def` the default issuer parameter (text or
 * null). The calling AE of a study without issuer is that of its first instance in ImagingStudySync's
 * order (all of them share it: another AE's bare Patient ID is another patient and is refused).
 */
export function studyPatientKeySql(def: string): string {
  const q = `s.attrs->'00100024'->'Value'->0`;
  return `CASE WHEN s.patient_id = '' THEN 'unidentified:' || s.study_uid ELSE
      s.patient_id || chr(31) ||
      CASE WHEN s.issuer <> '' THEN s.issuer
           WHEN json_typeof(${q}) = 'object' THEN ''
           ELSE coalesce(${def}::text, (SELECT i.source_ae FROM dicom_instance i WHERE i.study_uid = s.study_uid
                                        ORDER BY i.instance_number NULLS LAST, i.sop_uid LIMIT 1), '') END
      || chr(31) || coalesce(btrim(${q}->'00400032'->'Value'->>0), '')
      || chr(31) || coalesce(btrim(${q}->'00400033'->'Value'->>0), '') END`;
}

/** How a conflict names the other patient: Patient ID and its issuer, never a name. */
export function describeStoredPatient(patientId: string, issuer: string): string {
  if (!patientId) return 'an unidentified patient (no Patient ID)';
  return `Patient ID ${patientId}${issuer ? ` (issuer ${issuer})` : ''}`;
}
