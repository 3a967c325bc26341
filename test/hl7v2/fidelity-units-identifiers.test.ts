/**
 * What the inbound mapper keeps of the original for the way back out (docs/hl7v2.md "What is kept"): the unit code
 * received beside the UCUM one, and assigning authorities as received; and how the outbound builder writes them
 * back (OBX-6 alternate triplet, CX-4/CX-6, EI-2..4). The whole-corpus round trip is test/hl7v2-outbound/roundtrip.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { DiagnosticReport, Observation, Patient } from '@medplum/fhirtypes';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { mapMessage } from '../../facades/hl7v2/inbound/map-message.js';
import { DEFAULT_MAPPING } from '../../facades/hl7v2/inbound/mapping-config.js';
import { buildOru } from '../../facades/hl7v2/outbound/build-oru.js';
import { PROFILES } from '../../facades/hl7v2/outbound/profiles.js';

const PQ = 'http://hl7.org/fhir/StructureDefinition/iso21090-PQ-translation';
const HD = 'urn:conflux:extension:hl7v2-assigning-authority';

const message = (obx6: string[]) =>
  [
    'MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240305101500||ORU^R01^ORU_R01|FID-1|P|2.5.1',
    'PID|1||36363636^^^MPI&2.16.840.1.113883.19.3.2.1&ISO^MR~444333333^^^&2.16.840.1.113883.4.1^ISO^SS~777^^^HOSP^PI',
    'ORC|RE|PL-1^EHR^1.2.3^ISO|FL-1^LAB',
    'OBR|1|PL-1^EHR^1.2.3^ISO|FL-1^LAB|24326-1^Electrolytes^LN|||20240305101500|||||||||||||||20240305101500|||F',
    ...obx6.map((u, i) => `OBX|${i + 1}|NM|2345-${i}^Test ${i}^LN||${10 + i}|${u}|1-20||||F`),
  ].join('\r');

function mapped(obx6: string[]) {
  const m = mapMessage(Hl7v2Message.parse(message(obx6)), DEFAULT_MAPPING);
  const res = m.bundle.entry!.map((e) => e.resource!);
  return {
    obs: res.filter((r): r is Observation => r.resourceType === 'Observation'),
    report: res.find((r): r is DiagnosticReport => r.resourceType === 'DiagnosticReport')!,
    patient: res.find((r): r is Patient => r.resourceType === 'Patient')!,
  };
}

describe('HL7 v2 fidelity: unit codes and assigning authorities', () => {
  it('keeps a local, an MDC and an alternate unit code beside UCUM, and a unit no table knows as its own code', () => {
    const { obs } = mapped(['CD:289^mg/dL', '262688^MDC_DIM_PERCENT^MDC', 'mmol/L^^UCUM^MMOLL^millimole per liter^99LAB', 'mg/dL', 'XU^strange unit^99LAB']);
    const q = obs.map((o) => o.valueQuantity);
    expect(q[0]).toEqual({ value: 10, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL', extension: [{ url: PQ, valueQuantity: { value: 10, code: 'CD:289', unit: 'mg/dL' } }] });
    expect(q[1]).toEqual({
      value: 11,
      unit: '%',
      system: 'http://unitsofmeasure.org',
      code: '%',
      extension: [{ url: PQ, valueQuantity: { value: 11, code: '262688', unit: 'MDC_DIM_PERCENT', system: 'urn:iso:std:iso:11073:10101' } }],
    });
    expect(q[2]!.extension![0]!.valueQuantity).toEqual({ value: 12, code: 'MMOLL', unit: 'millimole per liter', system: 'urn:conflux:hl7v2:cs:99LAB' });
    // A plain UCUM unit has nothing else to keep.
    expect(q[3]).toEqual({ value: 13, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' });
    expect(q[4]).toEqual({ value: 14, unit: 'strange unit', system: 'urn:conflux:hl7v2:cs:99LAB', code: 'XU' });
  });

  it('keeps PID-3 and order-number assigning authorities as received, without changing the identity (system|value)', () => {
    const { patient, report } = mapped(['mg/dL']);
    expect(patient.identifier).toEqual([
      {
        extension: [{ url: HD, extension: [{ url: 'namespace', valueString: 'MPI' }, { url: 'universalId', valueString: '2.16.840.1.113883.19.3.2.1' }, { url: 'universalIdType', valueString: 'ISO' }] }],
        system: 'urn:oid:2.16.840.1.113883.19.3.2.1',
        value: '36363636',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
      },
      {
        extension: [
          { url: HD, extension: [{ url: 'universalId', valueString: '2.16.840.1.113883.4.1' }] },
          { url: 'urn:conflux:extension:hl7v2-assigning-facility', extension: [{ url: 'namespace', valueString: 'SS' }] },
        ],
        system: 'urn:conflux:hl7v2:aa:2.16.840.1.113883.4.1',
        value: '444333333',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ISO' }] },
      },
      // A namespace the system already spells needs nothing more.
      { system: 'urn:conflux:hl7v2:aa:HOSP', value: '777', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'PI' }] } },
    ]);
    expect(report.identifier![1]).toMatchObject({ system: 'urn:oid:1.2.3', value: 'PL-1', extension: [{ url: HD, extension: [{ url: 'namespace', valueString: 'EHR' }, { url: 'universalId', valueString: '1.2.3' }, { url: 'universalIdType', valueString: 'ISO' }] }] });
  });

  it('writes them back: OBX-6 UCUM first and the received code as the alternate; PID-3 and EI as received', () => {
    const { obs, report, patient } = mapped(['CD:289^mg/dL', '262688^MDC_DIM_PERCENT^MDC']);
    const out = Hl7v2Message.parse(buildOru({ report, observations: obs, patient, controlId: 'X1', at: new Date('2024-03-05T10:00:00Z') }, PROFILES.generic));
    expect(out.all('OBX').map((o) => o.raw(6))).toEqual(['mg/dL^^UCUM^CD:289^mg/dL', '%^^UCUM^262688^MDC_DIM_PERCENT^MDC']);
    expect(out.first('PID')!.raw(3)).toBe('36363636^^^MPI&2.16.840.1.113883.19.3.2.1&ISO^MR~444333333^^^&2.16.840.1.113883.4.1^ISO^SS~777^^^HOSP^PI');
    expect(out.first('OBR')!.raw(2)).toBe('PL-1^EHR^1.2.3^ISO');
    expect(out.first('ORC')!.raw(2)).toBe('PL-1^EHR^1.2.3^ISO');
    expect(out.first('OBR')!.raw(3)).toBe('FL-1^LAB');
    // Epic's text-only units: the unit text alone, as that profile says.
    const epic = Hl7v2Message.parse(buildOru({ report, observations: obs, patient, controlId: 'X2' }, PROFILES.epic));
    expect(epic.all('OBX').map((o) => o.raw(6))).toEqual(['mg/dL', '%']);
  });
});
