/**
 * Search — public contract used by the repository, the REST router and the facades.
 * The search module owns the index tables (migrations/010_search_index.sql) and keeps them
 * current inside the writer's transaction. See docs/search.md.
 *
 * CONTRACT (do not change signatures without updating the callers in src/fhir/repository.ts):
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Queryable, Tx } from '../../db/database.js';
import { patientCompartmentsOf as compartmentsOf } from './compartments.js';
import { initSearchDefinitions, paramsOf } from './definitions.js';
import { runSearch, runSearchIds, runSearchIdsMany } from './execute.js';
export { compartmentApplies } from './access.js';
import { allResourceTypes } from './types.js';
import { buildIndexCtes, deleteIndex, writeIndex } from './writer.js';
import { extractIndexRows } from './extract.js';

export interface SearchAccess {
  /** When set, only resources in one of these patient compartments ('Patient/<id>') are visible… */
  patientCompartments?: string[];
  /** …except resources of these types ('*': all), which a user/ or system/ scope grants beside patient/ ones. */
  compartmentExempt?: Set<string> | '*';
  /** When set, only these resource types are visible (others are silently excluded, also from _include). */
  allowedTypes?: Set<string> | '*';
  /** Extra AND criteria per type from granular SMART v2 scopes, e.g. {Observation: [['category','...|vital-signs']]}. */
  typeCriteria?: Record<string, Array<[string, string]>[]>;
}

export interface SearchRequest {
  /** undefined → system-level search (`GET /fhir?_type=...`). */
  resourceType?: string;
  /** Raw query parameters, in order, repeated keys kept (AND). */
  params: Array<[string, string]>;
  /** FHIR base URL used for fullUrl and paging links, e.g. http://localhost:8080/fhir */
  baseUrl: string;
  /** Prefer: handling=strict → unknown params are a 400; lenient (default) → reported as an outcome entry. */
  handling: 'strict' | 'lenient';
  access?: SearchAccess;
  /** Page size when _count is absent (default 20) and the largest _count honoured (default 1000). */
  defaultCount?: number;
  maxCount?: number;
}

/** Writes (replacing) every search index row of `resource` in the caller's transaction. */
export async function indexResource(tx: Tx, resource: Resource): Promise<void> {
  initSearchDefinitions();
  await writeIndex(tx, resource);
}

/**
 * The same index write as `indexResource` for one or more resources, as CTEs the repository folds into its own
 * INSERT, so a write (or a whole transaction's writes) is one statement. Parameters are appended to `params`.
 */
export function indexResourcesCtes(resources: Resource[], params: unknown[]): string[] {
  initSearchDefinitions();
  const items = resources.map((resource) => {
    if (!resource.id) throw new Error('indexResourcesCtes: resource has no id');
    return { resourceType: resource.resourceType, id: resource.id, rows: extractIndexRows(resource) };
  });
  // Version 1 is the first write of an id: there are no old rows to remove.
  const replaced = new Set(resources.filter((r) => r.meta?.versionId !== '1').map((r) => `${r.resourceType}/${r.id}`));
  return buildIndexCtes(items, (item) => replaced.has(`${item.resourceType}/${item.id}`), params);
}

/** Removes every index row of a resource (on delete). */
export async function removeResourceIndex(tx: Tx, resourceType: string, id: string): Promise<void> {
  await deleteIndex(tx, resourceType, id);
}

/** 'Patient/<id>' of every Patient compartment the resource belongs to (CompartmentDefinition patient). */
export function patientCompartmentsOf(resource: Resource): string[] {
  initSearchDefinitions();
  return compartmentsOf(resource);
}

/** Runs a search and returns the searchset Bundle. Throws FhirError(400) on malformed input. */
export async function searchResources(db: Queryable, req: SearchRequest): Promise<Bundle> {
  initSearchDefinitions();
  return runSearch(db, req);
}

/** Ids matching a search (for conditional create/update/delete and conditional references); at most `limit`. */
export async function searchIds(
  db: Queryable,
  resourceType: string,
  params: Array<[string, string]>,
  limit: number,
): Promise<string[]> {
  initSearchDefinitions();
  return runSearchIds(db, resourceType, params, limit);
}

/** `searchIds` for several searches at once, in one round trip; answers in the order asked. */
export async function searchIdsMany(
  db: Queryable,
  searches: Array<{ resourceType: string; params: Array<[string, string]> }>,
  limit: number,
): Promise<string[][]> {
  initSearchDefinitions();
  return runSearchIdsMany(db, searches, limit);
}

export interface SupportedSearchParam {
  name: string;
  type: 'number' | 'date' | 'string' | 'token' | 'reference' | 'composite' | 'quantity' | 'uri' | 'special';
  definition: string;
  documentation?: string;
}

/** Every search parameter this server answers for a type, for the CapabilityStatement (rest.resource.searchParam). */
export function supportedSearchParams(resourceType: string): SupportedSearchParam[] {
  const out: SupportedSearchParam[] = [...paramsOf(resourceType).values()].map((p) => ({
    name: p.code,
    type: p.type,
    definition: p.url,
    ...(p.description ? { documentation: p.description } : {}),
  }));
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export { initSearchDefinitions, allResourceTypes };
