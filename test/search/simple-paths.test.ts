import { readdirSync, readFileSync } from 'node:fs';
import { evalFhirPathTyped, toTypedValue } from '@medplum/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { indexedParamsOf } from '../../src/fhir/search/definitions.js';
import { initSearchDefinitions } from '../../src/fhir/search/index.js';
import { compileSimplePath } from '../../src/fhir/search/simple-paths.js';
import { fixturePath } from '../../tools/shared-data.js';

/** Edge cases a plain path meets: primitives with extensions, arrays of arrays, choice types, contained resources. */
const EDGE_CASES: Resource[] = [
  {
    resourceType: 'Patient',
    id: 'p1',
    birthDate: '1984-02-29',
    _birthDate: { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1984-02-29T10:00:00Z' }] },
    name: [{ family: 'Nowak', given: ['Anna', 'Maria'] }, { family: 'Kowalska', _family: { extension: [{ url: 'urn:x', valueString: 'y' }] } }],
    address: [{ city: 'Kraków', line: ['a', 'b'] }, { postalCode: '30-001' }],
    contained: [{ resourceType: 'Organization', id: 'o1', name: 'Inside' }],
    managingOrganization: { reference: '#o1' },
  } as Resource,
  {
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }, { system: 'urn:local', code: 'HR' }], text: 'Heart rate' },
    subject: { reference: 'Patient/p1', identifier: { system: 'urn:mrn', value: '123' } },
    effectivePeriod: { start: '2024-01-01T00:00:00Z', end: '2024-01-01T01:00:00Z' },
    valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    component: [
      { code: { text: 'a' }, valueString: 'x' },
      { code: { coding: [{ code: 'b' }] }, valueCodeableConcept: { coding: [{ system: 'urn:s', code: 'c' }] } },
    ],
    performer: [],
  } as Resource,
];

/** Real resources of many types: the Synthea bundles in test/fixtures. */
function syntheaResources(limit: number): Resource[] {
  const dir = fixturePath('fhir', 'synthea');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .slice(0, 3)
    .flatMap((f) => ((JSON.parse(readFileSync(`${dir}/${f}`, 'utf8')) as Bundle).entry ?? []).map((e) => e.resource as Resource))
    .slice(0, limit);
}

describe('plain-path search expressions', () => {
  it('give exactly what the FHIRPath engine gives, for every indexed parameter they apply to', () => {
    loadFhirDefinitions();
    initSearchDefinitions();
    const resources = [...EDGE_CASES, ...syntheaResources(3000)];
    let compared = 0;
    let nonEmpty = 0;
    for (const resource of resources) {
      const input = [toTypedValue(resource)];
      for (const def of indexedParamsOf(resource.resourceType)) {
        const fast = compileSimplePath(def.expression!, resource.resourceType);
        if (!fast) continue;
        // Index extraction reads type and value; the engine also reports each value's path, which it does not use.
        const expected = evalFhirPathTyped(def.expression!, input, { '%resource': input[0] }).map(({ type, value }) => ({ type, value }));
        expect(fast(input), `${resource.resourceType}.${def.code}`).toEqual(expected);
        compared++;
        if (expected.length) nonEmpty++;
      }
      // Composite parameters' parts are read from each element the parameter's expression yields.
      for (const def of indexedParamsOf(resource.resourceType).filter((d) => d.parts)) {
        for (const el of evalFhirPathTyped(def.expression!, input, { '%resource': input[0] })) {
          for (const part of def.parts!) {
            const fast = compileSimplePath(part.expression, null);
            if (!fast) continue;
            const expected = evalFhirPathTyped(part.expression, [el], { '%resource': input[0] }).map(({ type, value }) => ({ type, value }));
            expect(fast([el]), `${resource.resourceType}.${def.code} part ${part.expression.toString()}`).toEqual(expected);
            compared++;
            if (expected.length) nonEmpty++;
          }
        }
      }
    }
    // The comparison ran on real values, not only on absent elements.
    expect(nonEmpty).toBeGreaterThan(10);
    expect(compared).toBeGreaterThan(nonEmpty);
  });

  it('leave every other shape to the engine', () => {
    loadFhirDefinitions();
    initSearchDefinitions();
    const byCode = (type: string, code: string) => indexedParamsOf(type).find((d) => d.code === code)!;
    expect(compileSimplePath(byCode('Observation', 'code').expression!, 'Observation')).toBeDefined();
    // `(Observation.value as Quantity)`, `Patient.telecom.where(system='phone')`: not plain paths.
    expect(compileSimplePath(byCode('Observation', 'value-quantity').expression!, 'Observation')).toBeUndefined();
    expect(compileSimplePath(byCode('Patient', 'phone').expression!, 'Patient')).toBeUndefined();
    // A path for another type never runs on this one.
    expect(compileSimplePath(byCode('Observation', 'code').expression!, 'Condition')).toBeUndefined();
  });
});
