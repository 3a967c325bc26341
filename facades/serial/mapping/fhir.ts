/**
 * ReportDraft → FHIR transaction Bundle: Device (conditional create unless known), one Observation per
 * result and one DiagnosticReport per order, all conditional creates keyed by a hash of
 * (instrument, test, time, value) so a retransmission files nothing twice. fullUrls are derived from the
 * same keys, so the same reading always yields the same Bundle (a held reading is not queued twice).
 */
import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, Device, DiagnosticReport, Identifier, Observation } from '@medplum/fhirtypes';
import { INTERPRETATION_SYSTEM } from './astm-map.js';
import { UCUM } from './codemap.js';
import type { ObservationDraft, ReportDraft } from './draft.js';

export const OBSERVATION_ID_SYSTEM = 'urn:conflux:serial:observation';
export const REPORT_ID_SYSTEM = 'urn:conflux:serial:report';
const VITAL_SIGNS = new Set(['8867-4', '59408-5', '2708-6', '9279-1', '8310-5', '8480-6', '8462-4', '85354-9', '29463-7', '8302-2']);

function hash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u001f')).digest('hex');
}

function urn(h: string): string {
  return `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** FHIR search token escaping (`\`, `,`, `$`, `|`) then URL encoding, for an ifNoneExist query. */
export function tokenQuery(system: string | undefined, value: string): string {
  const esc = (s: string) => s.replace(/[\\,$|]/g, (c) => `\\${c}`);
  return `identifier=${encodeURIComponent(system ? `${esc(system)}|${esc(value)}` : esc(value))}`;
}

/** Stable text of an instrument's identity, the first part of every reading key. */
export function deviceKeyOf(ids: Identifier[]): string {
  return ids.map((i) => `${i.system ?? ''}|${i.value ?? ''}`).sort().join(' ');
}

function valueText(v: ObservationDraft['value']): string {
  return v.kind === 'quantity' ? `${v.comparator ?? ''}${v.value} ${v.unit ?? ''}` : v.kind === 'string' ? v.value : '';
}

export function observationKey(deviceKey: string, sampleId: string | undefined, o: ObservationDraft): string {
  return hash(deviceKey, sampleId ?? '', o.testId, o.effective ?? '', valueText(o.value), o.status ?? '');
}

/**
 * A transaction entry that is never written: it lets the identity guard check (under its lock) whether a sample
 * id already names another patient's DiagnosticReport. Reports keep the sample id as an identifier without
 * system (type "specimen id"), hence `|<id>`; a sample id of an HL7 order without system matches too, which is
 * wanted (the same tube).
 */
export function specimenProbe(sampleId: string | undefined, patient: string): BundleEntry | undefined {
  if (!sampleId) return undefined;
  const esc = sampleId.replace(/[\\,$|]/g, (c) => `\\${c}`);
  return {
    resource: { resourceType: 'DiagnosticReport', status: 'unknown', code: { text: 'specimen id probe' }, subject: { reference: patient } },
    request: { method: 'POST', url: 'DiagnosticReport', ifNoneExist: `identifier=${encodeURIComponent(`|${esc}`)}` },
  };
}

export interface BundleInput {
  report: ReportDraft;
  deviceIdentifiers: Identifier[];
  deviceName: string;
  /** 'Device/<id>' when the device is registered; otherwise a conditional create is added. */
  device?: string;
  /** 'Patient/<id>', or undefined for a bundle that will be held. */
  patient?: string;
  issued: Date;
}

export function buildReportBundle(input: BundleInput): { bundle: Bundle; observationKeys: string[] } {
  const { report } = input;
  const deviceKey = deviceKeyOf(input.deviceIdentifiers);
  const entries: BundleEntry[] = [];
  let deviceRef = input.device;
  if (!deviceRef) {
    const ids = input.deviceIdentifiers.filter((i) => i.value);
    const fullUrl = urn(hash('device', deviceKey));
    const device: Device = {
      resourceType: 'Device',
      status: 'active',
      identifier: ids,
      deviceName: [{ name: input.deviceName, type: 'manufacturer-name' }],
    };
    entries.push({
      fullUrl,
      resource: device,
      request: { method: 'POST', url: 'Device', ...(ids[0] ? { ifNoneExist: tokenQuery(ids[0].system, ids[0].value as string) } : {}) },
    });
    deviceRef = fullUrl;
  }
  const subject = input.patient ? { subject: { reference: input.patient } } : {};
  const observationKeys: string[] = [];
  const resultRefs: string[] = [];
  for (const o of report.observations) {
    const key = observationKey(deviceKey, report.sampleId, o);
    observationKeys.push(key);
    const fullUrl = urn(key);
    resultRefs.push(fullUrl);
    const vital = o.loinc && VITAL_SIGNS.has(o.loinc);
    const obs: Observation = {
      resourceType: 'Observation',
      identifier: [{ system: OBSERVATION_ID_SYSTEM, value: key }],
      status: o.status,
      category: [
        vital
          ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }
          : { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] },
      ],
      code: o.code,
      ...subject,
      ...(o.effective ? { effectiveDateTime: o.effective } : {}),
      issued: (o.issued ?? input.issued).toISOString(),
      ...(o.value.kind === 'quantity'
        ? {
            valueQuantity: {
              value: o.value.value,
              ...(o.value.comparator ? { comparator: o.value.comparator } : {}),
              ...(o.value.unit ? { unit: o.value.unit } : {}),
              ...(o.value.ucum ? { system: UCUM, code: o.value.ucum } : {}),
            },
          }
        : o.value.kind === 'string'
          ? { valueString: o.value.value }
          : { dataAbsentReason: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'unknown' }] } }),
      ...(o.interpretation.length
        ? { interpretation: o.interpretation.map((c) => ({ coding: [{ system: INTERPRETATION_SYSTEM, code: c }] })) }
        : {}),
      ...(o.referenceRange
        ? {
            referenceRange: [
              {
                ...(o.referenceRange.low !== undefined ? { low: { value: o.referenceRange.low, ...(o.referenceRange.unit ? { unit: o.referenceRange.unit } : {}) } } : {}),
                ...(o.referenceRange.high !== undefined ? { high: { value: o.referenceRange.high, ...(o.referenceRange.unit ? { unit: o.referenceRange.unit } : {}) } } : {}),
                ...(o.referenceRange.text ? { text: o.referenceRange.text } : {}),
              },
            ],
          }
        : {}),
      ...(o.notes.length || o.instrument ? { note: [...o.notes, ...(o.instrument ? [`instrument: ${o.instrument}`] : [])].map((text) => ({ text })) } : {}),
      device: { reference: deviceRef },
    };
    entries.push({
      fullUrl,
      resource: obs,
      request: { method: 'POST', url: 'Observation', ifNoneExist: tokenQuery(OBSERVATION_ID_SYSTEM, key) },
    });
  }
  if (report.code) {
    const key = hash('report', deviceKey, report.sampleId ?? '', ...observationKeys);
    const dr: DiagnosticReport = {
      resourceType: 'DiagnosticReport',
      identifier: [
        { system: REPORT_ID_SYSTEM, value: key },
        ...(report.sampleId ? [{ type: { text: 'specimen id' }, value: report.sampleId }] : []),
      ],
      status: report.status,
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: 'LAB' }] }],
      code: report.code,
      ...subject,
      ...(report.effective ? { effectiveDateTime: report.effective } : {}),
      issued: input.issued.toISOString(),
      result: resultRefs.map((reference) => ({ reference })),
      ...(report.notes.length ? { conclusion: report.notes.join('; ') } : {}),
    };
    entries.push({
      fullUrl: urn(key),
      resource: dr,
      request: { method: 'POST', url: 'DiagnosticReport', ifNoneExist: tokenQuery(REPORT_ID_SYSTEM, key) },
    });
  }
  return { bundle: { resourceType: 'Bundle', type: 'transaction', entry: entries }, observationKeys };
}
