import { describe, expect, it } from 'vitest';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { dateRange, decimalRange, normalizeString, sortableNumber, splitOr } from '../../src/fhir/search/values.js';
import { patientCompartmentsOf, supportedSearchParams } from '../../src/fhir/search/index.js';

describe('search value normalisation', () => {
  it('turns a FHIR date into the range its precision denotes', () => {
    const r = (s: string): [string, string] => {
      const x = dateRange(s)!;
      return [x.low.toISOString(), x.high.toISOString()];
    };
    expect(r('2020')).toEqual(['2020-01-01T00:00:00.000Z', '2020-12-31T23:59:59.999Z']);
    expect(r('2020-02')).toEqual(['2020-02-01T00:00:00.000Z', '2020-02-29T23:59:59.999Z']);
    expect(r('2021-02')).toEqual(['2021-02-01T00:00:00.000Z', '2021-02-28T23:59:59.999Z']);
    expect(r('2020-03-04')).toEqual(['2020-03-04T00:00:00.000Z', '2020-03-04T23:59:59.999Z']);
    expect(r('2020-03-04T10:15')).toEqual(['2020-03-04T10:15:00.000Z', '2020-03-04T10:15:59.999Z']);
    expect(r('2020-03-04T10:15:30+02:00')).toEqual(['2020-03-04T08:15:30.000Z', '2020-03-04T08:15:30.999Z']);
    expect(r('2020-03-04T10:15:30.5Z')).toEqual(['2020-03-04T10:15:30.500Z', '2020-03-04T10:15:30.500Z']);
    for (const bad of ['2020-13', '2021-02-30', '20', '2020-1-1', 'yesterday', '2020-01-01T25:00']) expect(dateRange(bad), bad).toBeUndefined();
  });

  it('gives decimals their implicit precision range', () => {
    expect(decimalRange('100')).toEqual({ value: 100, low: 99.5, high: 100.5 });
    const r = decimalRange('1.50')!;
    expect(r.low).toBeCloseTo(1.495, 10);
    expect(r.high).toBeCloseTo(1.505, 10);
    expect(decimalRange('1e2')!.high).toBeCloseTo(150, 10);
    expect(decimalRange('abc')).toBeUndefined();
  });

  it('encodes numbers so that text order is numeric order', () => {
    const nums = [-1e10, -5.5, -1, -0.001, 0, 0.001, 1, 2, 10, 99.5, 1e10];
    const enc = nums.map(sortableNumber);
    expect([...enc].sort()).toEqual(enc);
  });

  it('normalises strings for case- and accent-insensitive search', () => {
    expect(normalizeString('  Müller-Lüdenscheidt ÉLISE ')).toBe('muller-ludenscheidt elise');
  });

  it('splits OR values on unescaped commas', () => {
    expect(splitOr('a,b\\,c,d')).toEqual(['a', 'b\\,c', 'd']);
  });
});

describe('patient compartments and capability', () => {
  it('puts a resource into the compartment of each patient it refers to through the listed parameters', () => {
    const obs: Observation = {
      resourceType: 'Observation',
      id: 'o1',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/p1' },
      performer: [{ reference: 'Patient/p2' }, { reference: 'Practitioner/d1' }],
    };
    expect(patientCompartmentsOf(obs)).toEqual(['Patient/p1', 'Patient/p2']);
    const p: Patient = { resourceType: 'Patient', id: 'p3', link: [{ other: { reference: 'Patient/p4' }, type: 'seealso' }] };
    expect(patientCompartmentsOf(p)).toEqual(['Patient/p3', 'Patient/p4']);
    expect(patientCompartmentsOf({ resourceType: 'Organization', id: 'x' })).toEqual([]);
  });

  it('lists every R4 search parameter of a type with its definition', () => {
    const obs = supportedSearchParams('Observation');
    const names = obs.map((p) => p.name);
    for (const n of ['code', 'date', 'patient', 'subject', 'value-quantity', 'component-code-value-quantity', '_id', '_lastUpdated', '_tag']) {
      expect(names).toContain(n);
    }
    expect(obs.find((p) => p.name === 'code')).toMatchObject({ type: 'token', definition: 'http://hl7.org/fhir/SearchParameter/clinical-code' });
    expect(supportedSearchParams('Patient').length).toBeGreaterThan(25);
  });
});
