/**
 * DiagnosticReport + its Observations → ORU^R01 (one ORC/OBR with its OBX and NTE), the reverse of
 * inbound/map-results.ts. A final Observation that no report lists goes out under an OBR built from the
 * Observation's own code, because receivers file OBX only under an order.
 */
import type { DiagnosticReport, Encounter, Identifier, Observation, Patient, Quantity } from '@medplum/fhirtypes';
import { PQ_TRANSLATION } from '../inbound/datatypes.js';
import { codingSystemName, comps, cwe, ei, esc, identifierTypeCode, nm, reps, ts, xcn } from './datatypes.js';

const UCUM = 'http://unitsofmeasure.org';
import type { Dialect } from './profiles.js';
import { msh, pid, pv1, segment } from './segments.js';

export interface OruInput {
  report?: DiagnosticReport;
  observations: Observation[];
  patient?: Patient;
  encounter?: Encounter;
  controlId: string;
  at?: Date;
  /** Set for a withdrawal message ('ORU:WITHDRAW'): what was deleted from the store since it was sent. */
  withdrawal?: Withdrawal;
}

export interface Withdrawal {
  /** The report (or, without one, the standalone Observation) was deleted; it is sent from its last version. */
  groupDeleted: boolean;
  /** Ids of the report's Observations that were deleted (sent from their last version). */
  deletedResults: Set<string>;
}

interface ResultCodes {
  obr25: string;
  obx11: (o: Observation) => string | undefined;
  /** OBX-11 of the report's presentedForm (ED) OBX. */
  ed: string | undefined;
}

/**
 * OBR-25 / OBX-11 of a withdrawal (HL7 v2.5.1 ch. 7, tables 0123 and 0085; the same in v2.3, so the same
 * for every profile). A deletion counts as entered-in-error: a result that vanishes was wrong.
 *  - entered-in-error: OBX-11 W ("post original as wrong, e.g. transmitted for wrong patient"): the
 *    receiver deletes the result. The order itself stands, so OBR-25 is C (results corrected), not X
 *    (which cancels the order at Epic and Cerner).
 *  - a cancelled report: OBR-25 X (no results; order cancelled); results that went out with it are
 *    deleted (OBX-11 D), its own cancelled ones are X (cannot be obtained), wrong ones W.
 *  - a cancelled Observation: OBX-11 X; without a report its OBR is its own, so OBR-25 X as well.
 * Results still valid in a report that stands keep their status; undefined means "as usual".
 */
function withdrawalCodes(report: DiagnosticReport | undefined, observations: Observation[], w: Withdrawal): ResultCodes {
  const wrong = (o: Observation) => w.deletedResults.has(o.id ?? '') || o.status === 'entered-in-error';
  if (!report) {
    const first = observations[0];
    const status = w.groupDeleted ? 'entered-in-error' : first?.status;
    if (status === 'cancelled') return { obr25: 'X', obx11: () => 'X', ed: undefined };
    return { obr25: 'C', obx11: (o) => (w.groupDeleted || wrong(o) ? 'W' : undefined), ed: undefined };
  }
  const status = w.groupDeleted ? 'entered-in-error' : report.status;
  if (status === 'entered-in-error') return { obr25: 'C', obx11: () => 'W', ed: 'W' };
  if (status === 'cancelled') return { obr25: 'X', obx11: (o) => (wrong(o) ? 'W' : o.status === 'cancelled' ? 'X' : 'D'), ed: 'D' };
  return { obr25: 'C', obx11: (o) => (wrong(o) ? 'W' : o.status === 'cancelled' ? 'X' : undefined), ed: undefined };
}

const REPORT_STATUS: Record<string, string> = {
  final: 'F',
  corrected: 'C',
  amended: 'C',
  appended: 'C',
  partial: 'A',
  preliminary: 'P',
  registered: 'I',
  cancelled: 'X',
  'entered-in-error': 'X',
};
const OBS_STATUS: Record<string, string> = {
  final: 'F',
  corrected: 'C',
  amended: 'C',
  preliminary: 'P',
  registered: 'I',
  cancelled: 'X',
  'entered-in-error': 'W',
  unknown: '',
};

export function orderNumbers(ids: Identifier[] | undefined): { placer?: Identifier; filler?: Identifier } {
  const list = ids ?? [];
  const placer = list.find((i) => identifierTypeCode(i) === 'PLAC');
  const filler = list.find((i) => identifierTypeCode(i) === 'FILL') ?? list.find((i) => i !== placer && !identifierTypeCode(i));
  return { placer, filler };
}

export function buildOru(input: OruInput, d: Dialect): string {
  const { report, observations, patient } = input;
  const segs = [msh(d, { code: 'ORU', trigger: 'R01', structure: 'ORU_R01', controlId: input.controlId, at: input.at ?? new Date() })];
  segs.push(pid(patient, d));
  const visit = pv1(input.encounter, d);
  if (visit) segs.push(visit);
  const { placer, filler } = orderNumbers(report?.identifier);
  segs.push(segment('ORC', ['RE', ei(placer, d), ei(filler, d)]));
  const first = observations[0];
  const codes = input.withdrawal ? withdrawalCodes(report, observations, input.withdrawal) : undefined;
  const obr: string[] = new Array(32).fill('');
  obr[0] = '1';
  obr[1] = ei(placer, d);
  obr[2] = ei(filler, d);
  obr[3] = cwe(report?.code ?? first?.code, d);
  obr[6] = ts(report?.effectiveDateTime ?? report?.effectivePeriod?.start ?? first?.effectiveDateTime, d);
  obr[21] = ts(report?.issued ?? first?.issued, d);
  obr[23] = esc(report?.category?.find((c) => c.coding?.some((x) => x.system === 'http://terminology.hl7.org/CodeSystem/v2-0074'))?.coding?.[0]?.code);
  obr[24] = codes?.obr25 ?? REPORT_STATUS[report?.status ?? first?.status ?? ''] ?? '';
  obr[31] = report?.resultsInterpreter?.[0] ? xcn(report.resultsInterpreter[0], d) : '';
  segs.push(segment('OBR', obr));
  let nte = 0;
  if (report?.conclusion) for (const line of report.conclusion.split('\n')) segs.push(segment('NTE', [String(++nte), 'L', esc(line)]));
  let setId = 0;
  for (const o of observations) {
    segs.push(obx(o, ++setId, d, codes?.obx11(o)));
    nte = 0;
    // One NTE per note; inbound joins a note's NTE-3 repetitions with newlines, so a line per repetition.
    for (const n of o.note ?? []) segs.push(segment('NTE', [String(++nte), 'L', reps(n.text.split('\n').map(esc))]));
  }
  for (const form of report?.presentedForm ?? []) {
    if (!form.data) continue;
    const [type, sub] = (form.contentType ?? 'application/octet-stream').split('/');
    const code = comps('', esc(form.title ?? 'Report'));
    segs.push(segment('OBX', [String(++setId), 'ED', code, '', comps('', esc(type?.toUpperCase() === 'APPLICATION' ? 'AP' : type?.toUpperCase()), esc(sub?.toUpperCase()), 'Base64', form.data), '', '', '', '', '', codes?.ed ?? REPORT_STATUS[report?.status ?? ''] ?? 'F']));
  }
  return segs.join('\r');
}

/** The sub-id the inbound mapper folded into the result key (…#<code>#<OBX-4>), so a resend keys the same. */
function subId(o: Observation): string {
  const key = o.identifier?.find((i) => i.system === 'urn:conflux:hl7v2:result-key')?.value;
  if (!key) return '';
  return key.slice(key.lastIndexOf('#') + 1);
}

/**
 * OBX-6: UCUM in the first triplet and, as the alternate (CWE-4..6), the unit code the result arrived with
 * when that was a local or MDC code (the inbound mapper keeps it as the iso21090-PQ-translation extension).
 * A unit that is not UCUM goes with its own code and coding system when it has them, otherwise as text.
 */
function units(q: Quantity | undefined, d: Dialect): string {
  if (!q) return '';
  const ucum = q.system === UCUM && q.code;
  if (d.units === 'text') return esc(q.unit ?? q.code);
  const alt = q.extension?.find((e) => e.url === PQ_TRANSLATION)?.valueQuantity;
  const altTriplet = alt?.code ? [esc(alt.code), esc(alt.unit), esc(codingSystemName(alt.system, d))] : [];
  if (ucum) return comps(esc(q.code), q.unit && q.unit !== q.code ? esc(q.unit) : '', 'UCUM', ...altTriplet);
  if (q.code && q.system) return comps(esc(q.code), q.unit && q.unit !== q.code ? esc(q.unit) : '', esc(codingSystemName(q.system, d)), ...altTriplet);
  if (altTriplet.length) return comps(esc(q.unit ?? q.code), '', '', ...altTriplet);
  return esc(q.unit ?? q.code);
}

function value(o: Observation, d: Dialect): { type: string; value: string; unit?: Quantity } {
  if (o.valueQuantity) {
    const q = o.valueQuantity;
    if (q.comparator) {
      if (d.comparatorType === 'ST') return { type: 'ST', value: esc(`${q.comparator}${nm(q.value)}`), unit: q };
      return { type: 'SN', value: comps(esc(q.comparator), nm(q.value)), unit: q };
    }
    return { type: 'NM', value: nm(q.value), unit: q };
  }
  if (o.valueRange) return { type: 'SN', value: comps('', nm(o.valueRange.low?.value), '-', nm(o.valueRange.high?.value)), unit: o.valueRange.low ?? o.valueRange.high };
  if (o.valueRatio) return { type: 'SN', value: comps('', nm(o.valueRatio.numerator?.value), ':', nm(o.valueRatio.denominator?.value)) };
  if (o.valueCodeableConcept) return { type: d.codedType, value: cwe(o.valueCodeableConcept, d) };
  if (o.valueDateTime) return { type: d.dateTimeType, value: ts(o.valueDateTime, d) };
  if (o.valueTime) return { type: 'TM', value: o.valueTime.replace(/:/g, '') };
  if (o.valueBoolean !== undefined) return { type: 'ST', value: o.valueBoolean ? 'true' : 'false' };
  if (o.valueInteger !== undefined) return { type: 'NM', value: String(o.valueInteger) };
  if (o.valueString !== undefined) {
    const lines = o.valueString.split('\n');
    // Multi-line text travels as TX repetitions, which the inbound mapper joins back with newlines.
    return { type: lines.length > 1 || o.valueString.length > 199 ? 'TX' : 'ST', value: reps(lines.map(esc)) || '' };
  }
  return { type: 'ST', value: '' };
}

export function obx(o: Observation, setId: number, d: Dialect, status?: string): string {
  const v = value(o, d);
  const f: string[] = new Array(17).fill('');
  f[0] = String(setId);
  f[1] = v.type;
  f[2] = cwe(o.code, d);
  f[3] = esc(subId(o));
  f[4] = v.value;
  f[5] = units(v.unit, d);
  f[6] = esc(o.referenceRange?.[0] ? rangeText(o.referenceRange[0]) : '');
  f[7] = reps((o.interpretation ?? []).map((i) => esc(i.coding?.[0]?.code ?? i.text)));
  f[10] = OBS_STATUS[o.status] ?? '';
  if (o.status === 'amended' && !/^2\.[0-5]/.test(d.version)) f[10] = 'A';
  if (status !== undefined) f[10] = status;
  f[13] = ts(o.effectiveDateTime ?? o.effectivePeriod?.start ?? o.effectiveInstant, d);
  f[15] = reps((o.performer ?? []).map((p) => xcn(p, d)));
  f[16] = cwe(o.method, d);
  return segment('OBX', f);
}

function rangeText(r: NonNullable<Observation['referenceRange']>[number]): string {
  if (r.text) return r.text;
  const lo = r.low?.value;
  const hi = r.high?.value;
  if (lo !== undefined && hi !== undefined) return `${nm(lo)}-${nm(hi)}`;
  if (hi !== undefined) return `<${nm(hi)}`;
  if (lo !== undefined) return `>${nm(lo)}`;
  return '';
}
