/** Message building per dialect: what an Epic, a Cerner and a generic receiver get for the same resources. */
import { describe, expect, it } from 'vitest';
import type { DiagnosticReport, Observation, Patient, Procedure, ServiceRequest } from '@medplum/fhirtypes';
import { Hl7Message } from '@medplum/core';
import { buildOru } from '../../facades/hl7v2/outbound/build-oru.js';
import { buildOrder } from '../../facades/hl7v2/outbound/build-orm.js';
import { dialectFor } from '../../facades/hl7v2/outbound/profiles.js';
import { ts } from '../../facades/hl7v2/outbound/datatypes.js';
import { withControlId } from '../../facades/hl7v2/outbound/build.js';
import { orderControl } from '../../facades/hl7v2/outbound/triggers.js';
import { backoffMs } from '../../facades/hl7v2/outbound/worker.js';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';

const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
const patient: Patient = {
  resourceType: 'Patient',
  identifier: [
    { system: 'urn:oid:2.16.840.1.113883.4.1', value: '123-45-6789', type: { coding: [{ system: V2_0203, code: 'SS' }] } },
    { system: 'urn:conflux:hl7v2:aa:HOSP', value: 'E1234', type: { coding: [{ system: V2_0203, code: 'MR' }] } },
  ],
  name: [{ family: "O'Brien", given: ['Mary', 'Ann'], use: 'official' }],
  birthDate: '1961-07-04',
  gender: 'female',
};
const report: DiagnosticReport = {
  resourceType: 'DiagnosticReport',
  status: 'corrected',
  identifier: [{ system: 'urn:conflux:hl7v2:aa:LAB', value: 'F77', type: { coding: [{ system: V2_0203, code: 'FILL' }] } }],
  code: { coding: [{ system: 'http://loinc.org', code: '24323-8', display: 'Comprehensive metabolic panel' }] },
  effectiveDateTime: '2024-03-05T10:15:30.250+01:00',
};
const obs: Observation[] = [
  {
    resourceType: 'Observation',
    status: 'corrected',
    code: { coding: [{ system: 'http://loinc.org', code: '2345-7', display: 'Glucose' }] },
    valueQuantity: { value: 5.5, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
    referenceRange: [{ text: '3.9-5.8' }],
    interpretation: [{ coding: [{ code: 'N' }] }],
    note: [{ text: 'fasting | confirmed ^ twice' }],
  },
  {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '1751-7', display: 'Albumin' }] },
    valueQuantity: { value: 0.00000012, comparator: '<', unit: 'g/dL', system: 'http://unitsofmeasure.org', code: 'g/dL' },
  },
  {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'urn:conflux:hl7v2:cs:99LOCAL', code: 'BACT' }] },
    valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: '66543000', display: 'Campylobacter jejuni' }] },
  },
];
const seg = (text: string, name: string) => Hl7v2Message.parse(text).first(name)!;

describe('ORU^R01 per profile', () => {
  it('generic: v2.5.1, every identifier, UCUM units, offsets kept, SN for comparators, CWE', () => {
    const text = buildOru({ report, observations: obs, patient, controlId: 'C1', at: new Date('2024-03-05T12:00:00Z') }, dialectFor('generic'));
    const msg = Hl7v2Message.parse(text);
    expect(msg.messageType).toBe('ORU^R01^ORU_R01');
    expect(msg.version).toBe('2.5.1');
    expect(msg.controlId).toBe('C1');
    expect(msg.first('PID')!.raw(3)).toBe('123-45-6789^^^&2.16.840.1.113883.4.1&ISO^SS~E1234^^^HOSP^MR');
    expect(msg.first('PID')!.raw(5)).toBe("O'Brien^Mary^Ann^^^^L");
    expect(msg.first('OBR')!.get(3)).toBe('F77');
    expect(msg.first('OBR')!.get(3, 2)).toBe('LAB');
    expect(msg.first('OBR')!.get(7)).toBe('20240305101530.250+0100');
    expect(msg.first('OBR')!.get(25)).toBe('C');
    const [glu, alb, bact] = msg.all('OBX');
    expect(glu!.raw(6)).toBe('mmol/L^^UCUM');
    expect(glu!.get(11)).toBe('C');
    expect(alb!.get(2)).toBe('SN');
    expect(alb!.raw(5)).toBe('<^0.00000012');
    expect(bact!.get(2)).toBe('CWE');
    expect(bact!.raw(3)).toBe('BACT^^99LOCAL');
    expect(bact!.raw(5)).toBe('66543000^Campylobacter jejuni^SCT');
    // The note's delimiters are escaped and read back intact.
    expect(msg.first('NTE')!.get(3)).toBe('fasting | confirmed ^ twice');
    // And a different HL7 parser agrees.
    const other = Hl7Message.parse(text);
    expect(other.getSegment('OBX')?.getField(5).toString()).toBe('5.5');
  });

  it('epic: v2.3, MRN alone as ^^^EPI^MRN, wall-clock seconds without offset, CE, text units', () => {
    const d = dialectFor('epic', { defaultAssigningAuthority: 'EPI', assigningAuthorities: { 'urn:conflux:hl7v2:aa:HOSP': 'EPI' }, receivingFacility: 'MAIN' });
    const text = buildOru({ report, observations: obs, patient, controlId: 'C2' }, d);
    const msg = Hl7v2Message.parse(text);
    expect(msg.messageType).toBe('ORU^R01');
    expect(msg.version).toBe('2.3');
    expect(msg.msh.get(5)).toBe('EPIC');
    expect(msg.msh.get(6)).toBe('MAIN');
    expect(msg.first('PID')!.raw(3)).toBe('E1234^^^EPI^MRN');
    expect(msg.first('OBR')!.get(7)).toBe('20240305101530');
    const obx = msg.all('OBX');
    expect(obx[0]!.raw(6)).toBe('mmol/L');
    expect(obx[2]!.get(2)).toBe('CE');
  });

  it('epic with a time zone converts timestamps to the receiver zone', () => {
    const d = dialectFor('epic', { timeZone: 'America/Chicago' });
    expect(ts('2024-03-05T10:15:30+01:00', d)).toBe('20240305031530');
    expect(ts('2024-07-05T10:15:30Z', dialectFor('cerner', { timeZone: 'America/Chicago' }))).toBe('20240705051530-0500');
    expect(ts('2024-03-05', d)).toBe('20240305');
  });

  it('cerner: v2.5.1, every identifier, the MRN typed, seconds with offset', () => {
    const p: Patient = { ...patient, identifier: [{ system: 'urn:conflux:hl7v2:aa:HOSP', value: 'E1234' }] };
    const text = buildOru({ report, observations: obs, patient: p, controlId: 'C3' }, dialectFor('cerner'));
    const msg = Hl7v2Message.parse(text);
    expect(msg.first('PID')!.raw(3)).toBe('E1234^^^HOSP^MRN');
    expect(msg.first('OBR')!.get(7)).toBe('20240305101530+0100');
  });
});

describe('orders and the procedure-step status message', () => {
  const order: ServiceRequest = {
    resourceType: 'ServiceRequest',
    status: 'active',
    intent: 'order',
    identifier: [
      { system: 'urn:conflux:hl7v2:aa:EHR', value: 'P100', type: { coding: [{ system: V2_0203, code: 'PLAC' }] } },
      { system: 'urn:conflux:hl7v2:aa:RIS', value: 'A200', type: { coding: [{ system: V2_0203, code: 'FILL' }] } },
    ],
    code: { coding: [{ system: 'http://loinc.org', code: '36643-5', display: 'XR Chest 2V' }] },
    priority: 'stat',
    authoredOn: '2024-03-05T09:00:00Z',
    requester: { display: 'Alan Admit', identifier: { system: 'urn:conflux:hl7v2:aa:NPI', value: '1234' } },
    subject: { reference: 'Patient/1' },
  };

  it('ORM^O01 NW for a new order (generic), OML^O21 for cerner', () => {
    const orm = Hl7v2Message.parse(buildOrder({ order, control: 'NW', patient, controlId: 'O1' }, dialectFor('generic')));
    expect(orm.messageType).toBe('ORM^O01^ORM_O01');
    const orc = orm.first('ORC')!;
    expect([orc.get(1), orc.get(2), orc.get(3), orc.get(5)]).toEqual(['NW', 'P100', 'A200', 'IP']);
    expect(orc.raw(12)).toBe('1234^Admit^Alan^^^^^^NPI');
    const obr = orm.first('OBR')!;
    expect([obr.get(2), obr.get(3), obr.get(4), obr.get(5)]).toEqual(['P100', 'A200', '36643-5', 'S']);
    const oml = Hl7v2Message.parse(buildOrder({ order, control: 'NW', patient, controlId: 'O2' }, dialectFor('cerner')));
    expect(oml.messageType).toBe('OML^O21^OML_O21');
  });

  it('SC with ORC-5 CM when the procedure step completes', () => {
    const procedure: Procedure = {
      resourceType: 'Procedure',
      status: 'completed',
      basedOn: [{ reference: 'ServiceRequest/1' }],
      subject: { reference: 'Patient/1' },
      performedPeriod: { start: '2024-03-05T10:00:00Z', end: '2024-03-05T10:12:00Z' },
    };
    const msg = Hl7v2Message.parse(buildOrder({ order, procedure, control: 'SC', patient, controlId: 'S1' }, dialectFor('generic')));
    const orc = msg.first('ORC')!;
    expect([orc.get(1), orc.get(2), orc.get(3), orc.get(5), orc.get(9)]).toEqual(['SC', 'P100', 'A200', 'CM', '20240305101200+0000']);
    expect(msg.first('OBR')!.get(8)).toBe('20240305101200+0000');
  });

  it('order control follows the status transition', () => {
    const sr = (status: ServiceRequest['status']) => ({ ...order, status });
    expect(orderControl(sr('active'), undefined)).toBe('NW');
    expect(orderControl(sr('draft'), undefined)).toBeUndefined();
    expect(orderControl(sr('active'), sr('draft'))).toBe('NW');
    expect(orderControl(sr('active'), sr('active'))).toBe('XO');
    expect(orderControl(sr('revoked'), sr('active'))).toBe('CA');
    expect(orderControl(sr('on-hold'), sr('active'))).toBe('HD');
    expect(orderControl(sr('active'), sr('on-hold'))).toBe('RL');
    expect(orderControl(sr('completed'), sr('active'))).toBe('SC');
  });
});

describe('delivery helpers', () => {
  it('backoff grows exponentially within [d/2, d], capped', () => {
    const p = { maxAttempts: 0, initialDelayMs: 1000, maxDelayMs: 8000 };
    expect(backoffMs(1, p, () => 0)).toBe(500);
    expect(backoffMs(1, p, () => 1)).toBe(1000);
    expect(backoffMs(3, p, () => 1)).toBe(4000);
    expect(backoffMs(10, p, () => 1)).toBe(8000);
    expect(backoffMs(10, p, () => 0)).toBe(4000);
  });

  it('a replayed payload gets a new MSH-10 and nothing else changes', () => {
    const text = 'MSH|^~\\&|A|B|C|D|20240101||ORU^R01|OLD|P|2.5.1\rPID|1||X';
    expect(withControlId(text, 'NEW')).toBe('MSH|^~\\&|A|B|C|D|20240101||ORU^R01|NEW|P|2.5.1\rPID|1||X');
  });

  it('escapes delimiters in values', () => {
    const p: Patient = { resourceType: 'Patient', identifier: [{ system: 'urn:conflux:hl7v2:aa:H', value: 'A|B^C' }] };
    const text = buildOru({ observations: [obs[0]!], patient: p, controlId: 'E' }, dialectFor('generic'));
    expect(seg(text, 'PID').raw(3)).toBe('A\\F\\B\\S\\C^^^H');
    expect(seg(text, 'PID').get(3)).toBe('A|B^C');
  });
});
