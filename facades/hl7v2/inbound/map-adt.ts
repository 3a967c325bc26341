/**
 * ADT → Patient (PID) and Encounter (PV1) upserts. Merges (A40/A34/A39 …) are not written by the Bundle:
 * the Bundle only makes sure both records exist (conditional creates, so neither patient is rewritten), and
 * `merges` asks the processor to run the core's patient merge (src/fhir/patient-merge.ts) in the same
 * transaction: links, active=false, the prior record's compartment re-pointed, audited.
 */
import type { Encounter, Patient } from '@medplum/fhirtypes';
import type { Hl7v2Message } from '../message.js';
import { HL7_ERROR, Hl7DataError, issueAt, type Hl7Issue } from './ack.js';
import { BundleBuilder } from './bundle-builder.js';
import { clean, toHumanName, toIdentifier, type MapContext } from './datatypes.js';
import { mapEncounter, mapPatient } from './map-patient.js';
import type { MappedMessage } from './mapped.js';

const ENCOUNTER_STATUS: Record<string, Encounter['status']> = {
  A01: 'in-progress',
  A02: 'in-progress',
  A03: 'finished',
  A04: 'arrived',
  A05: 'planned',
  A06: 'in-progress',
  A07: 'in-progress',
  A08: 'in-progress',
  A09: 'in-progress',
  A10: 'in-progress',
  A11: 'cancelled',
  A12: 'in-progress',
  A13: 'in-progress',
  A14: 'planned',
  A15: 'in-progress',
  A16: 'in-progress',
  A17: 'in-progress',
  A21: 'onleave',
  A22: 'in-progress',
  A25: 'in-progress',
  A26: 'in-progress',
  A27: 'cancelled',
  A32: 'in-progress',
  A33: 'in-progress',
  A38: 'cancelled',
};
/** Person-level events: PV1, when present, is a placeholder and makes no Encounter. */
/** Events whose MRG names a patient record that is merged into the PID one (A06/A07/A45 carry MRG for visits). */
const MERGE_EVENTS = new Set(['A18', 'A30', 'A34', 'A36', 'A39', 'A40', 'A47']);
const PERSON_ONLY = new Set(['A28', 'A29', 'A31', 'A24', 'A37', 'A34', 'A40', 'A41', 'A46', 'A47', 'A30', 'A39', 'A18', 'A19']);

export function mapAdt(msg: Hl7v2Message, ctx: MapContext): MappedMessage {
  const event = msg.triggerEvent || msg.first('EVN')?.get(1).toUpperCase() || '';
  const b = new BundleBuilder();
  const issues: Hl7Issue[] = [];
  let patientRef: string | undefined;
  let patientKey;
  let current: { ref: string } | undefined;
  const merges: NonNullable<MappedMessage['merges']> = [];
  const pids = msg.all('PID');
  if (pids.length === 0) throw new Hl7DataError([{ code: HL7_ERROR.requiredFieldMissing, segment: 'PID', message: `ADT^${event} without a PID segment` }]);
  for (const seg of msg.segments) {
    try {
      if (seg.name === 'PID') {
        const p = mapPatient(seg, ctx)!;
        if (event === 'A29') p.resource.active = false;
        // A merge message's PID names the survivor; it carries no demographics update (that is A08/A31's job),
        // and a PUT would replace the survivor's links (an earlier merge's `replaces`, or the `replaced-by` that
        // makes the merge refusable): created only when unknown.
        const ref = MERGE_EVENTS.has(event) ? b.createIfNone(p.resource, p.key) : b.upsert(p.resource, p.key);
        current = { ref };
        patientRef ??= ref;
        patientKey ??= p.key;
      } else if (seg.name === 'PV1' && current && !PERSON_ONLY.has(event)) {
        const status = ENCOUNTER_STATUS[event] ?? 'unknown';
        const e = mapEncounter(seg, ctx, seg.get(45) && status === 'in-progress' ? 'finished' : status);
        if (e) {
          e.resource.subject = { reference: current.ref };
          b.upsert(e.resource, e.key, { segment: seg, field: 19, what: 'visit number' });
        }
      } else if (seg.name === 'MRG' && current && MERGE_EVENTS.has(event)) {
        const survivor = b.entries.find((x) => x.fullUrl === current!.ref)!.resource as Patient;
        const oldIds = seg.reps(1).map((r) => toIdentifier(r, ctx)).filter((x) => x !== undefined);
        if (oldIds.length === 0) {
          issues.push(issueAt(seg, 1, HL7_ERROR.requiredFieldMissing, 'MRG-1 prior patient identifier is empty: nothing to merge'));
          continue;
        }
        if (oldIds.some((o) => survivor.identifier?.some((s) => s.system === o.system && s.value === o.value))) {
          issues.push(issueAt(seg, 1, HL7_ERROR.dataTypeError, 'MRG-1 names the surviving patient itself'));
          continue;
        }
        const name = seg.reps(7).map(toHumanName).filter((n) => n !== undefined);
        // An unknown prior record is created already merged (there is nothing of it to move); a known one is
        // left exactly as it is here: the merge sets its link and active flag as a new version.
        const merged: Patient = clean({
          resourceType: 'Patient',
          identifier: oldIds,
          active: false,
          name: name.length ? name : undefined,
          link: [{ other: { reference: current.ref }, type: 'replaced-by' as const }],
        });
        const mergedRef = b.createIfNone(merged, oldIds[0]!);
        merges.push({ survivor: current.ref, merged: mergedRef });
      }
    } catch (e) {
      if (e instanceof Hl7DataError) issues.push(...e.issues);
      else throw e;
    }
  }
  if (MERGE_EVENTS.has(event) && !msg.first('MRG') && issues.length === 0) {
    issues.push({ code: HL7_ERROR.segmentSequence, segment: 'MRG', message: `ADT^${event} merge without an MRG segment` });
  }
  if (issues.length) throw new Hl7DataError(issues);
  return { bundle: b.build(), keyOrigins: b.keyOrigins(), patientRef, patientKey, ...(merges.length ? { merges } : {}) };
}
