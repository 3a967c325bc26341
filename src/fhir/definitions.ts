import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import type { Bundle, SearchParameter } from '@medplum/fhirtypes';
import { indexRequiredBindings } from './bindings.js';
import { definitionSource, type DefinitionFile } from './definitions-compact.js';

let loaded = false;
let source: ReturnType<typeof definitionSource> | undefined;

/** One of the R4 definition bundles, from the build's compact set when there is one (see definitions-compact.ts). */
export function definitionBundle(file: DefinitionFile): Bundle {
  source ??= definitionSource();
  return source.bundle(file);
}

/**
 * Loads the R4 StructureDefinitions and SearchParameters into @medplum/core's registries, and the required
 * code bindings the validator checks on top of them, once per process.
 */
export function loadFhirDefinitions(): void {
  if (loaded) return;
  source ??= definitionSource();
  indexStructureDefinitionBundle(source.bundle('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(source.bundle('fhir/r4/profiles-resources.json'));
  indexRequiredBindings(source.bindings());
  indexSearchParameterBundle(source.bundle('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  loaded = true;
}
