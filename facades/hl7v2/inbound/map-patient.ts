/** PID → Patient and PV1 → Encounter (HL7 v2-to-FHIR IG segment maps PID[Patient], PV1[Encounter]). */
import type { ContactPoint, Encounter, Identifier, Patient } from '@medplum/fhirtypes';
import type { Segment } from '../message.js';
import { HL7_ERROR, Hl7DataError, issueAt } from './ack.js';
import { clean, fhirCode, toAddress, toCodeableConcept, toContactPoint, toDateTime, toHumanName, toIdentifier, toPractitionerRef, type MapContext } from './datatypes.js';

export interface MappedPatient {
  resource: Patient;
  /** The identifier used as the conditional key (first PID-3 repetition with a value). */
  key: Identifier;
}

/** PID-3 identifiers (falling back to PID-2 and PID-4 for v2.2/2.3 senders that put the MRN there). */
export function patientIdentifiers(pid: Segment, ctx: MapContext): Identifier[] {
  const ids: Identifier[] = [];
  for (const field of [3, 2, 4]) {
    for (const rep of pid.reps(field)) {
      const id = toIdentifier(rep, ctx);
      if (id && !ids.some((x) => x.system === id.system && x.value === id.value)) ids.push(id);
    }
    if (field === 3 && ids.length) break;
  }
  return ids;
}

export function mapPatient(pid: Segment, ctx: MapContext, opts: { requireIdentifier: boolean } = { requireIdentifier: true }): MappedPatient | undefined {
  const identifier = patientIdentifiers(pid, ctx);
  if (identifier.length === 0) {
    if (!opts.requireIdentifier) return undefined;
    throw new Hl7DataError([issueAt(pid, 3, HL7_ERROR.requiredFieldMissing, 'PID-3 patient identifier list is empty: the patient cannot be identified')]);
  }
  const name = pid.reps(5).map(toHumanName).filter((n) => n !== undefined);
  const telecom: ContactPoint[] = [
    ...pid.reps(13).map((r) => toContactPoint(r, 'home')),
    ...pid.reps(14).map((r) => toContactPoint(r, 'work')),
  ].filter((t): t is ContactPoint => t !== undefined);
  const sex = pid.get(8).toUpperCase();
  const gender = ({ M: 'male', F: 'female', O: 'other', U: 'unknown', A: 'other', N: 'unknown' } as Record<string, Patient['gender']>)[sex];
  const birthDate = toDateTime(pid.get(7), ctx, pid, 7)?.slice(0, 10);
  const deathFlag = pid.get(30).toUpperCase();
  const deathTime = toDateTime(pid.get(29), ctx, pid, 29);
  const marital = fhirCode(pid.get(16));
  const resource: Patient = clean({
    resourceType: 'Patient',
    identifier,
    active: true,
    name: name.length ? name : undefined,
    telecom: telecom.length ? telecom : undefined,
    gender,
    birthDate,
    address: pid.reps(11).map(toAddress).filter((a) => a !== undefined),
    maritalStatus: marital ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: marital }] } : undefined,
    deceasedDateTime: deathTime,
    deceasedBoolean: deathTime ? undefined : deathFlag === 'Y' ? true : deathFlag === 'N' ? false : undefined,
  } as Patient);
  if (resource.address?.length === 0) delete resource.address;
  return { resource, key: identifier[0]! };
}

const CLASS: Record<string, { code: string; display: string }> = {
  I: { code: 'IMP', display: 'inpatient encounter' },
  O: { code: 'AMB', display: 'ambulatory' },
  E: { code: 'EMER', display: 'emergency' },
  P: { code: 'PRENC', display: 'pre-admission' },
  R: { code: 'AMB', display: 'ambulatory' },
  B: { code: 'AMB', display: 'ambulatory' },
  N: { code: 'AMB', display: 'ambulatory' },
};

/** PV1 → Encounter, keyed by the visit number (PV1-19); undefined when the visit has no number. */
export function mapEncounter(pv1: Segment, ctx: MapContext, status: Encounter['status']): { resource: Encounter; key: Identifier } | undefined {
  const visit = pv1.reps(19)[0];
  const key = visit ? toIdentifier(visit, ctx) : undefined;
  if (!key) return undefined;
  const cls = CLASS[pv1.get(2).toUpperCase()] ?? { code: 'AMB', display: 'ambulatory' };
  const start = toDateTime(pv1.get(44), ctx, pv1, 44);
  const end = toDateTime(pv1.get(45), ctx, pv1, 45);
  const bed = [pv1.get(3, 1), pv1.get(3, 2), pv1.get(3, 3), pv1.get(3, 4)].filter(Boolean).join(' ');
  const attending = toPractitionerRef(pv1.reps(7)[0], ctx);
  const resource: Encounter = clean({
    resourceType: 'Encounter',
    identifier: [key],
    status,
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', ...cls },
    period: start || end ? clean({ start, end }) : undefined,
    location: bed ? [{ location: { display: bed } }] : undefined,
    participant: attending ? [{ individual: attending }] : undefined,
    hospitalization: pv1.get(36) ? { dischargeDisposition: toCodeableConcept(pv1.reps(36)[0], ctx) } : undefined,
  } as Encounter);
  return { resource, key };
}
