import { getResourceTypes, OperationOutcomeError, validateResource } from '@medplum/core';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { checkRequiredBindings } from './bindings.js';
import { loadFhirDefinitions } from './definitions.js';
import { badRequest, FhirError, notFound } from './outcome.js';

let resourceTypes: Set<string> | undefined;

function knownTypes(): Set<string> {
  if (!resourceTypes) {
    loadFhirDefinitions();
    resourceTypes = new Set(getResourceTypes());
  }
  return resourceTypes;
}

export function isResourceType(type: string): boolean {
  return knownTypes().has(type);
}

/** 404 for a type R4 does not define (the URL names something that cannot exist here). */
export function assertResourceType(type: string | undefined): asserts type is string {
  if (!type || !knownTypes().has(type)) throw notFound(`Unknown resource type "${type ?? ''}"`);
}

const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

export function assertValidId(id: string): void {
  if (!ID_PATTERN.test(id)) throw badRequest(`Invalid id "${id}": 1-64 characters of A-Z a-z 0-9 - .`, 'Resource.id');
}

/**
 * Validates against the R4 StructureDefinitions (cardinality, types, fixed values, invariants the library
 * evaluates). The library's OperationOutcome already carries FHIRPath `expression`s; we pass it through.
 */
export function assertValidResource(resource: Resource): void {
  loadFhirDefinitions();
  if (resource.id !== undefined) assertValidId(resource.id);
  const issues: OperationOutcomeIssue[] = [];
  try {
    validateResource(resource);
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) throw err;
    for (const issue of err.outcome.issue ?? []) {
      // The library puts its message in details.text; clients and log readers look at diagnostics.
      if (!issue.diagnostics && issue.details?.text) issue.diagnostics = `${issue.details.text} (${issue.expression?.join(', ') ?? ''})`;
      issues.push(issue);
    }
  }
  issues.push(...checkRequiredBindings(resource));
  if (issues.length) throw new FhirError(400, { resourceType: 'OperationOutcome', issue: issues });
}
