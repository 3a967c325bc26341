/**
 * Results (ORU^R01/R30/R40/R42, OUL^R22–R24) → DiagnosticReport per OBR and Observation per OBX
 * (HL7 v2-to-FHIR IG OBR[DiagnosticReport], OBX[Observation], SPM[Specimen], NTE[Annotation]),
 * including IHE PCD-01 device results: MDC codes (plus LOINC for vital signs), Device from OBX-18.
 * Segments are walked in order; each OBX belongs to the OBR before it.
 */
import type {
  Annotation,
  Attachment,
  CodeableConcept,
  DiagnosticReport,
  Device,
  Identifier,
  Observation,
  Patient,
  ObservationReferenceRange,
  Quantity,
  Reference,
  Specimen,
} from '@medplum/fhirtypes';
import type { Hl7v2Message, Segment } from '../message.js';
import { collectDataErrors, HL7_ERROR, Hl7DataError, issueAt, type Hl7Issue } from './ack.js';
import { BundleBuilder, orderKeyOrigin, type KeyOrigin } from './bundle-builder.js';
import { clean, dateOf, fhirCode, eiToIdentifier, PQ_TRANSLATION, toCodeableConcept, toDateTime, toPractitionerRef, unitOf, type MapContext } from './datatypes.js';
import { mapPatient } from './map-patient.js';
import { MDC_SYSTEM, vitalSignLoinc, EUI64_SYSTEM } from './codes.js';
import type { MappedMessage } from './mapped.js';

const OBS_STATUS: Record<string, Observation['status']> = {
  F: 'final',
  C: 'corrected',
  A: 'amended',
  P: 'preliminary',
  R: 'preliminary',
  S: 'preliminary',
  I: 'registered',
  X: 'cancelled',
  N: 'cancelled',
  D: 'entered-in-error',
  W: 'entered-in-error',
  U: 'final',
  O: 'registered',
};
const REPORT_STATUS: Record<string, DiagnosticReport['status']> = {
  F: 'final',
  C: 'corrected',
  A: 'partial',
  P: 'preliminary',
  R: 'preliminary',
  S: 'partial',
  I: 'registered',
  O: 'registered',
  X: 'cancelled',
  Y: 'final',
  Z: 'final',
};

export function mapResults(msg: Hl7v2Message, ctx: MapContext): MappedMessage {
  const b = new BundleBuilder();
  const issues: Hl7Issue[] = [];
  const pid = msg.first('PID');
  const isDevice = msg.all('OBX').some((o) => /^MDC$/i.test(o.get(3, 3))) || /IHE_PCD/i.test(msg.msh.raw(21));
  let patientRef: string | undefined;
  let patientKey: Identifier | undefined;
  if (pid) {
    try {
      const p = mapPatient(pid, ctx, { requireIdentifier: !isDevice });
      if (p) {
        patientKey = p.key;
        patientRef = b.createIfNone(p.resource, p.key);
      }
    } catch (e) {
      if (e instanceof Hl7DataError) issues.push(...e.issues);
      else throw e;
    }
  } else if (!isDevice) {
    issues.push({ code: HL7_ERROR.requiredFieldMissing, segment: 'PID', message: 'PID segment missing: the results cannot be filed to a patient' });
  }
  const subject: Reference<Patient> | undefined = patientRef ? { reference: patientRef } : undefined;
  const fallbackKey = `${ctx.senderNamespace}#${msg.controlId}`;

  let report: DiagnosticReport | undefined;
  let reportKey = '';
  let keyOrigin: KeyOrigin | undefined;
  let lastObs: Observation | undefined;
  let orc: Segment | undefined;
  const deviceIds: Identifier[] = [];
  const deviceRefs = new Map<string, string>();
  let effectiveAt: string | undefined;
  let specimenRef: string | undefined;
  let obrEffective: string | undefined;
  let obxCount = 0;

  const tryMap = collectDataErrors(issues);

  for (const seg of msg.segments) {
    switch (seg.name) {
      case 'ORC':
        orc = seg;
        break;
      case 'OBR': {
        const filler = eiToIdentifier(seg.reps(3)[0] ?? orc?.reps(3)[0], ctx, 'FILL');
        const placer = eiToIdentifier(seg.reps(2)[0] ?? orc?.reps(2)[0], ctx, 'PLAC');
        const orderKey = filler ?? placer ?? { system: 'urn:conflux:hl7v2:message-order', value: `${fallbackKey}#${seg.sequence}` };
        // A device's OBR-3 is often a gateway's counter, not an order (Mindray's eGateway sends 1 for every
        // snapshot, of every bed): a device report is one observation time (OBR-7) of it, so the next snapshot or
        // the next patient on the gateway is a new report, not a change to the last one.
        const deviceKey = isDevice && seg.get(7) ? { system: 'urn:conflux:hl7v2:device-report', value: `${orderKey.system}|${orderKey.value}#${seg.get(7)}` } : undefined;
        const key = deviceKey ?? orderKey;
        reportKey = `${key.system}#${key.value}`;
        keyOrigin = orderKeyOrigin(seg, orc, filler ? 3 : 2);
        obrEffective = tryMap(() => toDateTime(seg.get(7), ctx, seg, 7));
        const issued = tryMap(() => toDateTime(seg.get(22), ctx, seg, 22));
        const code = toCodeableConcept(seg.reps(4)[0], ctx);
        if (!code) issues.push(issueAt(seg, 4, HL7_ERROR.requiredFieldMissing, 'OBR-4 universal service identifier is empty'));
        const interpreter = toPractitionerRef(seg.reps(32)[0], ctx);
        specimenRef = undefined;
        const src = seg.reps(15)[0];
        if (src && src.c(1)) {
          const type = toCodeableConcept(src, ctx);
          specimenRef = b.createIfNone(
            clean({ resourceType: 'Specimen', identifier: [specimenKey(reportKey, 'OBR15')], type, subject } as Specimen),
            specimenKey(reportKey, 'OBR15'),
            keyOrigin,
          );
        }
        report = clean({
          resourceType: 'DiagnosticReport',
          identifier: [filler, placer].filter((x): x is Identifier => !!x),
          status: REPORT_STATUS[seg.get(25).toUpperCase()] ?? 'unknown',
          category: isDevice ? undefined : [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: fhirCode(seg.get(24)) ?? 'LAB' }] }],
          code: code ?? { text: 'unknown' },
          subject,
          effectiveDateTime: obrEffective,
          issued: issued && issued.includes('T') ? issued : undefined,
          resultsInterpreter: interpreter ? [interpreter] : undefined,
          result: [],
        } as DiagnosticReport);
        if (deviceKey) report.identifier = [...report.identifier!, deviceKey];
        if (report.identifier?.length === 0) report.identifier = [key];
        b.upsert(report, key, keyOrigin);
        lastObs = undefined;
        break;
      }
      case 'OBX': {
        // An OBX before any OBR (OUL specimen observations, ADT-style observations): a standalone Observation.
        lastObs = undefined;
        const mapped = tryMap(() => mapObservation(seg, ctx, isDevice));
        // Device from OBX-18 (PCD: the MDS/VMD that produced the metric).
        for (const rep of seg.reps(18)) {
          const id = deviceIdentifier(rep.c(1), rep.c(2), rep.c(3), rep.c(4), ctx);
          if (!id) continue;
          const k = `${id.system}|${id.value}`;
          if (!deviceRefs.has(k)) {
            deviceIds.push(id);
            const dev: Device = clean({
              resourceType: 'Device',
              identifier: [id],
              deviceName: seg.get(3, 2) ? [{ name: seg.get(3, 2), type: 'model-name' as const }] : undefined,
            } as Device);
            deviceRefs.set(k, b.createIfNone(dev, id));
          }
        }
        if (!mapped) break;
        if (mapped === 'structure') break;
        if ('attachment' in mapped) {
          if (!report) {
            issues.push(issueAt(seg, 2, HL7_ERROR.segmentSequence, `OBX-2 ${seg.get(2)} attachment before any OBR: no report to attach it to`));
            break;
          }
          report.presentedForm = [...(report.presentedForm ?? []), mapped.attachment];
          break;
        }
        const obs = mapped.obs;
        obxCount++;
        const code = obs.code.coding?.[0];
        const keyValue = `${report ? reportKey : `${fallbackKey}#OBX${seg.sequence}`}#${code?.system ?? ''}#${code?.code ?? obs.code.text ?? ''}#${seg.get(4)}`;
        const key: Identifier = { system: 'urn:conflux:hl7v2:result-key', value: keyValue };
        obs.identifier = [key];
        obs.subject = subject;
        if (!obs.effectiveDateTime && obrEffective) obs.effectiveDateTime = obrEffective;
        effectiveAt ??= obs.effectiveDateTime;
        const lastDevice = [...deviceRefs.values()].at(-1);
        if (lastDevice) obs.device = { reference: lastDevice };
        if (specimenRef && report) obs.specimen = { reference: specimenRef };
        const ref = b.upsert(obs, key, report ? keyOrigin : { segment: seg, field: 3, what: 'observation identifier' });
        report?.result!.push({ reference: ref });
        lastObs = obs;
        break;
      }
      case 'NTE': {
        const text = seg.reps(3).map((r) => r.c(1)).join('\n');
        if (!text) break;
        const note: Annotation = { text };
        if (lastObs) lastObs.note = [...(lastObs.note ?? []), note];
        else if (report) report.conclusion = report.conclusion ? `${report.conclusion}\n${text}` : text;
        break;
      }
      case 'SPM': {
        const id = eiToIdentifier(seg.reps(2)[0], ctx) ?? specimenKey(reportKey || fallbackKey, `SPM${seg.sequence}`);
        const collected = tryMap(() => toDateTime(seg.get(17, 1), ctx, seg, 17));
        const received = tryMap(() => toDateTime(seg.get(18), ctx, seg, 18));
        const spec: Specimen = clean({
          resourceType: 'Specimen',
          identifier: [id],
          type: toCodeableConcept(seg.reps(4)[0], ctx),
          subject,
          receivedTime: received && received.includes('T') ? received : undefined,
          collection: collected ? { collectedDateTime: collected } : undefined,
        } as Specimen);
        specimenRef = b.createIfNone(spec, id, { segment: seg, field: 2, what: 'specimen identifier' });
        if (report && report.specimen === undefined) report.specimen = [];
        if (report) report.specimen = [...(report.specimen ?? []), { reference: specimenRef }];
        break;
      }
    }
  }
  if (obxCount === 0 && !report && issues.length === 0) {
    issues.push({ code: HL7_ERROR.segmentSequence, segment: 'OBR', message: 'no OBR/OBX: the message carries no results' });
  }
  if (issues.length) throw new Hl7DataError(issues);
  for (const e of b.entries) {
    const r = e.resource as DiagnosticReport;
    if (r?.resourceType === 'DiagnosticReport' && r.result?.length === 0) delete r.result;
  }
  const mshTime = tryMap(() => toDateTime(msg.msh.get(7), ctx, msg.msh, 7));
  return {
    bundle: b.build(),
    keyOrigins: b.keyOrigins(),
    patientKey,
    patientRef,
    needsAssociation:
      isDevice && !patientRef
        ? {
            deviceIdentifiers: deviceIds,
            location: msg.first('PV1')?.raw(3) || undefined,
            at: dateOf(effectiveAt ?? mshTime) ?? new Date(),
          }
        : undefined,
  };
}

function specimenKey(orderKey: string, which: string): Identifier {
  return { system: 'urn:conflux:hl7v2:specimen-key', value: `${orderKey}#${which}` };
}

function deviceIdentifier(id: string, ns: string, uid: string, uidType: string, ctx: MapContext): Identifier | undefined {
  const eui = [uid, id].find((v) => /^[0-9A-Fa-f]{16}$/.test(v.replace(/[-:]/g, '')));
  if (eui && (/^EUI-?64$/i.test(uidType) || /^[0-9A-Fa-f]{16}$/.test(id))) {
    return { system: EUI64_SYSTEM, value: eui.replace(/[-:]/g, '').toUpperCase() };
  }
  if (!id) return undefined;
  return { system: `urn:conflux:hl7v2:device:${encodeURIComponent(ns || ctx.senderNamespace)}`, value: id };
}

type MappedObx = { obs: Observation } | { attachment: Attachment } | 'structure';

const NUM = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** One OBX → an Observation (or an attachment for the report, or nothing for a PCD containment row). */
export function mapObservation(seg: Segment, ctx: MapContext, isDevice: boolean): MappedObx {
  const type = seg.get(2).toUpperCase();
  const values = seg.reps(5);
  if (!type && values.length === 0) return 'structure';
  if (isDevice && values.length === 0 && ['ST', 'TX', 'CWE', 'CE', ''].includes(type)) return 'structure';
  if (type && !ctx.config.acceptedValueTypes.includes(type)) {
    throw new Hl7DataError([issueAt(seg, 2, HL7_ERROR.dataTypeError, `OBX-2 value type '${seg.get(2)}' is not an accepted HL7 data type`)]);
  }
  const code = toCodeableConcept(seg.reps(3)[0], ctx);
  if (!code) throw new Hl7DataError([issueAt(seg, 3, HL7_ERROR.requiredFieldMissing, 'OBX-3 observation identifier is empty')]);
  if (isDevice) {
    const loinc = vitalSignLoinc(seg.get(3, 1), seg.get(3, 2));
    if (loinc) code.coding = [...(code.coding ?? []), { system: 'http://loinc.org', code: loinc.code, display: loinc.display }];
  }
  const status = OBS_STATUS[seg.get(11).toUpperCase()] ?? 'unknown';
  const obs: Observation = { resourceType: 'Observation', status, code };
  const hasLoincVital = isDevice && code.coding?.some((c) => c.system === 'http://loinc.org');
  if (hasLoincVital) obs.category = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }];
  else if (!isDevice) obs.category = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }];
  const v = values[0];
  const unit = seg.reps(6)[0];
  const units = unit ? unitOf(unit, ctx) : undefined;
  const quantity = (value: number): Quantity => (units ? clean({ value, ...units.quantity, extension: units.original && [{ url: PQ_TRANSLATION, valueQuantity: { value, ...units.original } }] }) : { value });
  switch (type) {
    case 'NM': {
      const raw = v?.c(1).trim() ?? '';
      if (raw === '') break;
      if (!NUM.test(raw)) throw new Hl7DataError([issueAt(seg, 5, HL7_ERROR.dataTypeError, `OBX-5 '${raw}' is not a number but OBX-2 says NM`)]);
      obs.valueQuantity = quantity(Number(raw));
      break;
    }
    case 'SN': {
      if (!v) break;
      const comparator = v.c(1);
      const n1 = v.c(2);
      const sep = v.c(3);
      const n2 = v.c(4);
      const num = (s: string, comp: number) => {
        if (!NUM.test(s.trim())) throw new Hl7DataError([issueAt(seg, 5, HL7_ERROR.dataTypeError, `OBX-5 SN component ${comp} '${s}' is not a number`, comp)]);
        return Number(s);
      };
      if ((sep === '-' || sep === '') && n2 !== '' && sep === '-') {
        obs.valueRange = { low: quantity(num(n1, 2)), high: quantity(num(n2, 4)) };
      } else if ((sep === ':' || sep === '/') && n2 !== '') {
        obs.valueRatio = { numerator: { value: num(n1, 2) }, denominator: { value: num(n2, 4) } };
      } else if (n1 !== '') {
        const q = quantity(num(n1, 2));
        if (comparator) {
          if (!['<', '<=', '>=', '>'].includes(comparator)) {
            throw new Hl7DataError([issueAt(seg, 5, HL7_ERROR.dataTypeError, `OBX-5 SN comparator '${comparator}' is not one of <, <=, >, >=`, 1)]);
          }
          q.comparator = comparator as Quantity['comparator'];
        }
        obs.valueQuantity = q;
      }
      break;
    }
    case 'CE':
    case 'CWE':
    case 'CNE':
    case 'CF':
      obs.valueCodeableConcept = toCodeableConcept(v, ctx);
      break;
    case 'DT':
    case 'DTM':
    case 'TS':
      obs.valueDateTime = toDateTime(v?.c(1) ?? '', ctx, seg, 5);
      break;
    case 'TM':
      if (v?.c(1)) obs.valueTime = `${v.c(1).slice(0, 2)}:${v.c(1).slice(2, 4) || '00'}:${v.c(1).slice(4, 6) || '00'}`;
      break;
    case 'ED': {
      const data = v?.c(5) ?? '';
      const mime = [v?.c(2), v?.c(3)].filter(Boolean).join('/').toLowerCase();
      const isB64 = /^base64$/i.test(v?.c(4) ?? '');
      return {
        attachment: clean({
          contentType: mime.includes('/') ? mime : 'application/octet-stream',
          data: isB64 ? data.replace(/\s+/g, '') : Buffer.from(data, 'utf8').toString('base64'),
          title: code.text ?? code.coding?.[0]?.display,
        }),
      };
    }
    case 'RP':
      return { attachment: clean({ url: v?.c(1), contentType: v?.c(3) && v?.c(4) ? `${v.c(3)}/${v.c(4)}`.toLowerCase() : undefined, title: code.text }) };
    case 'NA':
      // A numeric array (waveform samples): kept as text; PCD waveforms need a SampledData period we are not sent.
      if (values.length) obs.valueString = values.map((r) => Array.from({ length: r.componentCount }, (_, i) => r.c(i + 1)).join(' ')).join(' ');
      break;
    default: {
      const text = values.map((r) => Array.from({ length: r.componentCount }, (_, i) => r.c(i + 1)).filter(Boolean).join(' ')).join('\n');
      if (text) obs.valueString = text;
    }
  }
  const range = seg.get(7);
  if (range) obs.referenceRange = [referenceRange(range, obs.valueQuantity)];
  const interp = seg.reps(8).map((r) => fhirCode(r.c(1))).filter((c): c is string => !!c);
  if (interp.length) {
    obs.interpretation = interp.map(
      (c): CodeableConcept => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: c }] }),
    );
  }
  const eff = toDateTime(seg.get(14), ctx, seg, 14);
  if (eff) obs.effectiveDateTime = eff;
  const performer = seg.reps(16).map((r) => toPractitionerRef(r, ctx)).filter((r): r is Reference => !!r);
  if (performer.length) obs.performer = performer as Observation["performer"];
  const method = toCodeableConcept(seg.reps(17)[0], ctx);
  if (method) obs.method = method;
  if (obs.valueQuantity === undefined && obs.valueString === undefined && obs.valueCodeableConcept === undefined && !obs.valueRange && !obs.valueRatio && !obs.valueDateTime && !obs.valueTime) {
    obs.dataAbsentReason = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'unknown' }] };
  }
  return { obs };
}

/** OBX-7 "3.5-5.0", "<5", ">=10", or free text. */
export function referenceRange(text: string, q: Quantity | undefined): ObservationReferenceRange {
  const unit = q ? clean({ unit: q.unit, system: q.system, code: q.code }) : {};
  const m = /^\s*([+-]?\d*\.?\d+)\s*-\s*([+-]?\d*\.?\d+)\s*$/.exec(text);
  if (m) return { low: { value: Number(m[1]), ...unit }, high: { value: Number(m[2]), ...unit }, text };
  const lt = /^\s*<=?\s*([+-]?\d*\.?\d+)\s*$/.exec(text);
  if (lt) return { high: { value: Number(lt[1]), ...unit }, text };
  const gt = /^\s*>=?\s*([+-]?\d*\.?\d+)\s*$/.exec(text);
  if (gt) return { low: { value: Number(gt[1]), ...unit }, text };
  return { text };
}

export { MDC_SYSTEM };
