/**
 * Orders (ORM^O01, OML^O21/O33/O35) → ServiceRequest per ORC/OBR (HL7 v2-to-FHIR IG ORC+OBR[ServiceRequest]):
 * placer and filler numbers as identifiers, ORC-1/ORC-5 → status, priority, requester, reason, accession
 * number; Patient upsert (conditional create: an order never overwrites demographics).
 */
import type { Identifier, Reference, ServiceRequest, Specimen } from '@medplum/fhirtypes';
import type { Hl7v2Message, Segment } from '../message.js';
import { collectDataErrors, HL7_ERROR, Hl7DataError, issueAt, type Hl7Issue } from './ack.js';
import { BundleBuilder, orderKeyOrigin } from './bundle-builder.js';
import { clean, eiToIdentifier, toCodeableConcept, toDateTime, toPractitionerRef, type MapContext } from './datatypes.js';
import { mapPatient } from './map-patient.js';
import type { MappedMessage } from './mapped.js';

const CONTROL_STATUS: Record<string, ServiceRequest['status']> = {
  NW: 'active',
  XO: 'active',
  RP: 'active',
  RO: 'active',
  SN: 'active',
  OK: 'active',
  CA: 'revoked',
  OC: 'revoked',
  DC: 'revoked',
  OD: 'revoked',
  CR: 'revoked',
  HD: 'on-hold',
  OH: 'on-hold',
  RL: 'active',
};
const ORDER_STATUS: Record<string, ServiceRequest['status']> = {
  A: 'active',
  IP: 'active',
  SC: 'active',
  CM: 'completed',
  CA: 'revoked',
  DC: 'revoked',
  HD: 'on-hold',
  ER: 'entered-in-error',
  RP: 'active',
};
const PRIORITY: Record<string, ServiceRequest['priority']> = { S: 'stat', A: 'asap', R: 'routine', P: 'routine', T: 'urgent', C: 'urgent' };

export function mapOrders(msg: Hl7v2Message, ctx: MapContext): MappedMessage {
  const b = new BundleBuilder();
  const issues: Hl7Issue[] = [];
  const pid = msg.first('PID');
  let patientRef: string | undefined;
  let patientKey: Identifier | undefined;
  const guard = collectDataErrors(issues);
  if (!pid) issues.push({ code: HL7_ERROR.requiredFieldMissing, segment: 'PID', message: 'PID segment missing: the order names no patient' });
  else {
    const p = guard(() => mapPatient(pid, ctx));
    if (p) {
      patientKey = p.key;
      patientRef = b.createIfNone(p.resource, p.key);
    }
  }
  const subject: Reference | undefined = patientRef ? { reference: patientRef } : undefined;
  const reasons = msg.all('DG1').map((d) => toCodeableConcept(d.reps(3)[0], ctx)).filter((c) => c !== undefined);

  let orc: Segment | undefined;
  let last: ServiceRequest | undefined;
  let count = 0;
  const emit = (orcSeg: Segment | undefined, obr: Segment | undefined) => {
    const placer = eiToIdentifier(orcSeg?.reps(2)[0] ?? obr?.reps(2)[0], ctx, 'PLAC');
    const filler = eiToIdentifier(orcSeg?.reps(3)[0] ?? obr?.reps(3)[0], ctx, 'FILL');
    const key = placer ?? filler;
    const at = orcSeg ?? obr!;
    if (!key) {
      issues.push(issueAt(at, 2, HL7_ERROR.requiredFieldMissing, `${at.name}-2 placer and ${at.name}-3 filler order numbers are both empty: the order cannot be identified`));
      return;
    }
    const control = orcSeg?.get(1).toUpperCase() ?? 'NW';
    const statusCode = orcSeg?.get(5).toUpperCase() ?? '';
    const status = (control === 'SC' || !CONTROL_STATUS[control] ? ORDER_STATUS[statusCode] : undefined) ?? CONTROL_STATUS[control] ?? 'unknown';
    const priorityCode = (obr?.get(5) || orcSeg?.get(7, 6) || msg.first('TQ1')?.get(9) || '').toUpperCase();
    const requester = toPractitionerRef(orcSeg?.reps(12)[0] ?? obr?.reps(16)[0], ctx);
    const code = toCodeableConcept(obr?.reps(4)[0], ctx);
    if (!code) {
      issues.push(issueAt(obr ?? at, 4, HL7_ERROR.requiredFieldMissing, 'OBR-4 universal service identifier is empty: what is ordered is unknown'));
      return;
    }
    const accession = obr?.get(18);
    const reasonHere = (obr?.reps(31) ?? []).map((r) => toCodeableConcept(r, ctx)).filter((c) => c !== undefined);
    const authored = guard(() => toDateTime(orcSeg?.get(9) ?? '', ctx, orcSeg!, 9));
    const occurrence = guard(() => (obr ? toDateTime(obr.get(27, 4) || obr.get(6), ctx, obr, obr.get(27, 4) ? 27 : 6) : undefined));
    const identifier = [placer, filler].filter((x): x is Identifier => !!x);
    if (accession) {
      identifier.push({
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] },
        system: `urn:conflux:hl7v2:accession:${encodeURIComponent(ctx.senderNamespace)}`,
        value: accession,
      });
    }
    const category = sectionCategory(obr?.get(24));
    const sr: ServiceRequest = clean({
      resourceType: 'ServiceRequest',
      identifier,
      status,
      intent: 'order',
      category,
      priority: PRIORITY[priorityCode],
      code,
      subject: subject ?? { display: 'unknown patient' },
      requester,
      authoredOn: authored && authored.includes('T') ? authored : undefined,
      occurrenceDateTime: occurrence,
      reasonCode: [...reasonHere, ...reasons].length ? [...reasonHere, ...reasons] : undefined,
    } as ServiceRequest);
    b.upsert(sr, key, orderKeyOrigin(obr ?? at, orcSeg, placer ? 2 : 3));
    last = sr;
    count++;
  };

  // Walk ORC/OBR pairs: an ORC may stand alone (a cancel), an OBR follows its ORC.
  let pendingOrc: Segment | undefined;
  for (const seg of msg.segments) {
    if (seg.name === 'ORC') {
      if (pendingOrc) emitOrcOnly(pendingOrc);
      pendingOrc = seg;
      orc = seg;
    } else if (seg.name === 'OBR') {
      emit(pendingOrc ?? orc, seg);
      pendingOrc = undefined;
    } else if (seg.name === 'NTE' && last) {
      const text = seg.reps(3).map((r) => r.c(1)).join('\n');
      if (text) last.note = [...(last.note ?? []), { text }];
    } else if (seg.name === 'SPM' && last) {
      const id = eiToIdentifier(seg.reps(2)[0], ctx);
      if (id) {
        const spec: Specimen = clean({ resourceType: 'Specimen', identifier: [id], type: toCodeableConcept(seg.reps(4)[0], ctx), subject } as Specimen);
        const ref = b.createIfNone(spec, id, { segment: seg, field: 2, what: 'specimen identifier' });
        last.specimen = [...(last.specimen ?? []), { reference: ref }];
      }
    }
  }
  if (pendingOrc) emitOrcOnly(pendingOrc);
  function emitOrcOnly(o: Segment) {
    // An ORC without OBR changes the status of an order we may already hold; without OBR-4 we cannot create one.
    const placer = eiToIdentifier(o.reps(2)[0], ctx, 'PLAC');
    if (!placer && !eiToIdentifier(o.reps(3)[0], ctx)) {
      issues.push(issueAt(o, 2, HL7_ERROR.requiredFieldMissing, 'ORC-2 placer and ORC-3 filler order numbers are both empty'));
      return;
    }
    const detail = msg.segments[msg.segments.indexOf(o) + 1]?.name;
    issues.push(
      issueAt(o, 0, HL7_ERROR.segmentSequence, detail === 'RXO' || detail === 'RXE'
        ? `ORC followed by ${detail}: pharmacy orders are not mapped (only ORC+OBR → ServiceRequest)`
        : 'ORC without an OBR: the order detail (OBR-4) is missing'),
    );
  }
  if (count === 0 && issues.length === 0) issues.push({ code: HL7_ERROR.segmentSequence, segment: 'ORC', message: 'no ORC/OBR order in the message' });
  if (issues.length) throw new Hl7DataError(issues);
  return { bundle: b.build(), keyOrigins: b.keyOrigins(), patientRef, patientKey };
}

/** DICOM modality codes (DICOM PS3.16 CID 29) that sites send in OBR-24 for imaging orders. */
const DICOM_MODALITIES = new Set([
  'CR', 'CT', 'DX', 'ES', 'IO', 'IVUS', 'MG', 'MR', 'NM', 'OCT', 'OP', 'OPT', 'PT', 'PX', 'RF', 'RG', 'SM', 'US', 'XA', 'XC', 'BMD', 'DG', 'ECG', 'HD',
]);

/**
 * OBR-24 diagnostic service section → category (HL7 table 0074); when it is a DICOM modality (a radiology
 * order as RIS systems send it), also the DCM code, which makes the order a modality worklist entry.
 */
function sectionCategory(section: string | undefined): ServiceRequest['category'] {
  const code = section?.trim().toUpperCase();
  if (!code) return undefined;
  const coding = [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code }];
  if (DICOM_MODALITIES.has(code)) coding.push({ system: 'http://dicom.nema.org/resources/ontology/DCM', code });
  return [{ coding }];
}
