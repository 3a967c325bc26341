/**
 * ASTM E1394 / LIS2-A2 message → ReadingSet: one ReportDraft per O record, one ObservationDraft per R
 * record, C records as notes of the record they follow, P identifiers as patient identifiers.
 */
import type { CodeableConcept, Identifier } from '@medplum/fhirtypes';
import { ConfluxError } from '../../../src/index.js';
import { type AstmRecord, parseAstmDateTime } from '../astm/records.js';
import { type CodeMap, DEFAULT_CODE_MAP, LOINC, embeddedLoinc, lookupCode, toUcum } from './codemap.js';
import type { ObservationDraft, ReadingSet, ReportDraft } from './draft.js';
import { fromWallClock } from './time.js';

export const ASTM_TEST_SYSTEM = 'urn:conflux:astm:test';
export const ASTM_SENDER_SYSTEM = 'urn:conflux:astm:sender';

export interface AstmMapOptions {
  codeMap?: CodeMap;
  timeZone: string;
  /** System given to P-record patient ids (e.g. the hospital MRN system); none → the P ids are not used. */
  patientIdentifierSystem?: string;
}

const RESULT_STATUS: Record<string, ObservationDraft['status']> = {
  F: 'final', C: 'corrected', P: 'preliminary', X: 'cancelled', I: 'registered', S: 'preliminary', M: 'final',
  R: 'final', N: 'final', Q: 'final', V: 'final', W: 'preliminary',
};
const REPORT_STATUS: Record<string, ReportDraft['status']> = {
  F: 'final', C: 'corrected', P: 'preliminary', X: 'cancelled', I: 'registered', Q: 'final', O: 'registered', Y: 'final', Z: 'final',
};
/** ASTM abnormal flags that are valid v3 ObservationInterpretation codes as they are. */
const FLAGS = new Set(['L', 'H', 'LL', 'HH', '<', '>', 'N', 'A', 'AA', 'U', 'D', 'B', 'W', 'S', 'R', 'I', 'MS', 'VS']);
export const INTERPRETATION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';

function when(s: string, timeZone: string): { at: Date; fhir: string } | undefined {
  const w = parseAstmDateTime(s);
  return w ? fromWallClock(w, timeZone) : undefined;
}

/** Universal test id → (stripped id, local code). Local code: LIS2-A2 component 4, or the next one set (Sysmex uses 5). */
export function testIdOf(r: AstmRecord, field: number): { testId: string; localCode: string; components: string[] } {
  const comps = r.components(field);
  const testId = comps.join('^').replace(/^\^+|\^+$/g, '');
  const local = comps.slice(3).find((c) => c !== '') ?? comps.find((c) => c !== '') ?? '';
  return { testId, localCode: local, components: comps };
}

function codeOf(testId: string, localCode: string, components: string[], map: CodeMap, name?: string): { code: CodeableConcept; loinc?: string; ucum?: string } {
  const mapped = lookupCode(map, testId, localCode);
  const loinc = mapped?.loinc ?? embeddedLoinc(components);
  const coding = [
    ...(loinc ? [{ system: LOINC, code: loinc, ...(mapped?.display ? { display: mapped.display } : {}) }] : []),
    { system: ASTM_TEST_SYSTEM, code: testId || localCode, ...(name ? { display: name } : {}) },
  ];
  return { code: { coding, text: name || localCode || testId }, loinc, ucum: mapped?.ucum };
}

function parseNumber(s: string): { value: number; comparator?: '<' | '<=' | '>=' | '>' } | undefined {
  const m = /^(<=|>=|<|>)?\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/.exec(s.trim());
  if (!m) return undefined;
  return { value: Number(m[2]), ...(m[1] ? { comparator: m[1] as '<' } : {}) };
}

/** "3.5 to 5.0", "3.5-5.0", "3.5^5.0", "<5", ">10": bounds for FHIR readers, the text as the instrument sent it. */
function parseRange(s: string): ObservationDraft['referenceRange'] {
  const t = s.trim();
  if (!t) return undefined;
  const m = /^([+-]?\d+(?:\.\d+)?)\s*(?:to|-|\^|–|\.\.)\s*([+-]?\d+(?:\.\d+)?)$/i.exec(t);
  if (m) return { low: Number(m[1]), high: Number(m[2]), text: t };
  const lt = /^<=?\s*(\d+(?:\.\d+)?)$/.exec(t);
  if (lt) return { high: Number(lt[1]), text: t };
  const gt = /^>=?\s*(\d+(?:\.\d+)?)$/.exec(t);
  if (gt) return { low: Number(gt[1]), text: t };
  return { text: t };
}

type Instant = { at: Date; fhir: string };

/**
 * The times of one result. The specimen's collection (O-8) is the clinically relevant time, as OBR-7 is for an HL7 v2
 * lab result: it is the effective time when the order gives it, and the test's completion is when the result
 * was issued. Without O-8 the result's own time (R-13, else R-12) is effective, else the order's or message's time.
 */
function resultTimes(r: AstmRecord, timeZone: string, order: { collected?: Instant; fallback?: Instant }): { effective?: Instant; issued?: Date } {
  const completed = when(r.text(13), timeZone);
  const effective = order.collected ?? completed ?? when(r.text(12), timeZone) ?? order.fallback;
  return { ...(effective ? { effective } : {}), ...(completed ? { issued: completed.at } : {}) };
}

function resultOf(r: AstmRecord, opts: AstmMapOptions, map: CodeMap, order: { collected?: Instant; fallback?: Instant }, orderFinal: boolean): ObservationDraft {
  const { testId, localCode, components } = testIdOf(r, 3);
  const { code, loinc, ucum: mappedUcum } = codeOf(testId, localCode, components, map, components[1] || undefined);
  // The value may carry components (GeneXpert: `NOT DETECTED^`, `^0.0`): the first one set is the value.
  const raw = r.components(4).find((c) => c !== '') ?? '';
  const unit = r.text(5);
  const n = parseNumber(raw);
  const ucum = toUcum(unit) ?? mappedUcum;
  const value: ObservationDraft['value'] = n
    ? { kind: 'quantity', ...n, ...(unit || mappedUcum ? { unit: unit || mappedUcum } : {}), ...(ucum ? { ucum } : {}) }
    : raw
      ? { kind: 'string', value: raw }
      : { kind: 'none' };
  const flags = r
    .text(7)
    .split(/[\\^,]/)
    .map((f) => f.trim().toUpperCase())
    .filter((f) => FLAGS.has(f));
  const statusCode = r.text(9).toUpperCase().slice(0, 1);
  const status = RESULT_STATUS[statusCode] ?? (orderFinal ? 'final' : 'preliminary');
  const { effective: t, issued } = resultTimes(r, opts.timeZone, order);
  const range = parseRange(r.text(6));
  return {
    testId: testId || localCode,
    code,
    loinc,
    value,
    ...(range ? { referenceRange: { ...range, ...(unit ? { unit } : {}) } } : {}),
    interpretation: flags,
    status,
    ...(t ? { effective: t.fhir, at: t.at } : {}),
    ...(issued ? { issued } : {}),
    ...(r.text(14) ? { instrument: r.text(14) } : {}),
    notes: [],
  };
}

/** Maps one message (H … L). Throws on a message without an H record. */
export function mapAstmMessage(records: AstmRecord[], opts: AstmMapOptions): ReadingSet {
  const map = { ...DEFAULT_CODE_MAP, ...(opts.codeMap ?? {}) };
  const h = records[0];
  if (!h || h.type !== 'H') throw new ConfluxError('structure', `an ASTM message starts with an H record, this one with "${h?.raw.slice(0, 20) ?? ''}"`);
  const sender = h.components(5);
  const warnings: string[] = [];
  const deviceIdentifiers: Identifier[] = [];
  const senderName = sender.filter((c) => c !== '').join(' ') || 'ASTM instrument';
  if (sender.some((c) => c !== '')) deviceIdentifiers.push({ system: ASTM_SENDER_SYSTEM, value: sender.join('^').replace(/\^+$/, '') });
  // Serial numbers in the sender field (Abbott: name^^serial; Sysmex: …^^^^serial) identify the instrument.
  for (const c of sender.slice(2)) if (/^[A-Za-z0-9][A-Za-z0-9\-_.]{3,}$/.test(c) && /\d/.test(c)) deviceIdentifiers.push({ value: c });
  const sent = when(h.text(14), opts.timeZone);

  const reports: ReportDraft[] = [];
  let patientIds: Identifier[] = [];
  let patientName: string | undefined;
  let report: ReportDraft | undefined;
  // The current O record's specimen collection time (O-8) and, without it, its requested time (O-7).
  let order: { collected?: Instant; fallback?: Instant } = { fallback: sent };
  let last: { notes: string[] } | undefined;
  for (const r of records.slice(1)) {
    switch (r.type) {
      case 'P': {
        patientIds = [];
        for (const f of [3, 4, 5]) {
          const v = r.components(f)[0];
          if (v && opts.patientIdentifierSystem) patientIds.push({ system: opts.patientIdentifierSystem, value: v });
          else if (v) warnings.push(`P record patient id "${v}" ignored: no patientIdentifierSystem configured for this port`);
        }
        patientName = r.components(6).filter((c) => c !== '').join(' ') || undefined;
        report = undefined;
        order = { fallback: sent };
        last = undefined;
        break;
      }
      case 'O': {
        const { testId, localCode, components } = testIdOf(r, 5);
        const reportType = r.text(26).toUpperCase().slice(0, 1);
        const collected = when(r.text(8), opts.timeZone);
        order = { collected, fallback: when(r.text(7), opts.timeZone) ?? sent };
        const tests = r.repetitions(5).length;
        report = {
          sampleId: r.components(3)[0] || r.components(4)[0] || undefined,
          code:
            tests > 1
              ? { text: r.repetitions(5).map((c) => c.filter((x) => x !== '').join('^')).join(', ') }
              : testId
                ? codeOf(testId, localCode, components, map).code
                : { text: 'Instrument results' },
          status: REPORT_STATUS[reportType] ?? 'final',
          // Without O-8 the report takes its results' time (below), which is what decides the association.
          ...(collected ? { effective: collected.fhir, at: collected.at } : {}),
          observations: [],
          patientIdentifiers: patientIds,
          patientName,
          notes: [],
        };
        reports.push(report);
        last = report;
        break;
      }
      case 'R': {
        if (!report) {
          // Some instruments (Arkray mock) send R without O: the results still form one report.
          report = { status: 'final', observations: [], patientIdentifiers: patientIds, patientName, notes: [], code: { text: 'Instrument results' } };
          reports.push(report);
        }
        const o = resultOf(r, opts, map, order, report.status === 'final');
        report.observations.push(o);
        last = o;
        break;
      }
      case 'C': {
        // C-4 is the comment text (components joined); it belongs to the record it follows.
        const text = r.repetitions(4).map((c) => c.filter((x) => x !== '').join(' ')).join('; ');
        if (text && last) last.notes.push(text);
        break;
      }
      case 'L':
      case 'M':
      case 'S':
      case 'Q':
        // Q (query) asks the host for orders; M/S are manufacturer/scientific records: logged, not filed.
        break;
      default:
        warnings.push(`record type "${r.type}" is not an ASTM E1394 record; ignored`);
    }
  }
  for (const rep of reports) {
    if (!rep.at) {
      const times = rep.observations.map((o) => o.at).filter((x): x is Date => !!x);
      if (times.length) {
        const latest = rep.observations.find((o) => o.at?.getTime() === Math.max(...times.map((x) => x.getTime())));
        rep.at = latest?.at;
        rep.effective = latest?.effective;
      } else if (sent) {
        rep.at = sent.at;
        rep.effective = sent.fhir;
      }
    }
  }
  return {
    deviceIdentifiers,
    deviceName: senderName,
    ...(sent ? { sentAt: sent.at } : {}),
    reports: reports.filter((r) => r.observations.length > 0),
    warnings,
    ...(h.text(3) ? { controlId: h.text(3) } : {}),
    ...(h.text(12) ? { processingId: h.text(12).slice(0, 1).toUpperCase() } : {}),
  };
}
