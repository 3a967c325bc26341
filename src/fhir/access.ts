import type { Resource } from '@medplum/fhirtypes';
import type { SearchAccess } from './search/index.js';

export type Interaction = 'read' | 'vread' | 'history' | 'search' | 'create' | 'update' | 'patch' | 'delete' | 'operation';

/**
 * What a caller may do, derived from its SMART token by smart/ (or "everything" for system work and AUTH=off).
 * Every FHIR interaction — REST, batch/transaction entry, facade write — asks the same policy.
 */
export interface AccessPolicy {
  /** Who acts, for audit: 'system', 'Practitioner/123', 'client:<id>'. */
  readonly actor: string;
  /** Throws FhirError 403 when the caller may not perform `interaction` on `resourceType` at all. */
  assertType(resourceType: string, interaction: Interaction): void;
  /** Throws FhirError 403 when `resource` is outside what the caller may see or write (e.g. another patient). */
  assertResource(resource: Resource, interaction: Interaction): void;
  /** Restrictions the search engine applies to matches and includes. */
  searchAccess(): SearchAccess | undefined;
}

/** Full access: facades acting for the system, and the server in AUTH=off mode. */
export function systemAccess(actor = 'system'): AccessPolicy {
  return {
    actor,
    assertType: () => undefined,
    assertResource: () => undefined,
    searchAccess: () => undefined,
  };
}
