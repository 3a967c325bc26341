import { evalFhirPath, getResourceTypes, OperationOutcomeError, validateResource } from '@medplum/core';
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
 * evaluates). The library's OperationOutcome already carries FHIRPath `expression`s; we pass it through, with a
 * sentence in `diagnostics` for each issue.
 */
export function assertValidResource(resource: Resource): void {
  const issues = validationIssues(resource).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (issues.length) throw new FhirError(400, { resourceType: 'OperationOutcome', issue: issues });
}

/** Every issue the validator finds (errors, and the library's warnings), each with a sentence in `diagnostics`. */
export function validationIssues(resource: Resource): OperationOutcomeIssue[] {
  loadFhirDefinitions();
  const issues: OperationOutcomeIssue[] = [];
  if (resource.id !== undefined && !ID_PATTERN.test(resource.id)) {
    issues.push({ severity: 'error', code: 'value', diagnostics: `Invalid id "${resource.id}": 1-64 characters of A-Z a-z 0-9 - . (Resource.id)`, expression: [`${resource.resourceType}.id`] });
  }
  let found: OperationOutcomeIssue[] = [];
  try {
    found = validateResource(resource);
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) throw err;
    found = err.outcome.issue ?? [];
  }
  for (const issue of found) {
    if (isValidBase64WithWhitespace(issue, resource)) continue;
    issues.push({ ...issue, diagnostics: sentence(issue) });
  }
  issues.push(...prototypeKeys(resource, resource.resourceType));
  issues.push(...checkRequiredBindings(resource));
  return issues;
}

/** Names every object has through Object.prototype; the library's element lookup takes them for known elements. */
const PROTOTYPE_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));

/** `__proto__`, `constructor`, `toString`… as element names: no FHIR element is called that, and they must not be stored. */
function prototypeKeys(node: unknown, path: string, out: OperationOutcomeIssue[] = []): OperationOutcomeIssue[] {
  if (Array.isArray(node)) node.forEach((x, i) => prototypeKeys(x, `${path}[${i}]`, out));
  else if (node && typeof node === 'object') {
    for (const key of Object.keys(node)) {
      if (PROTOTYPE_NAMES.has(key)) {
        out.push({ severity: 'error', code: 'structure', diagnostics: `Invalid additional property "${key}" (${path}.${key})`, expression: [`${path}.${key}`] });
      } else prototypeKeys((node as Record<string, unknown>)[key], `${path}.${key}`, out);
    }
  }
  return out;
}

/**
 * The library's message for an issue as one sentence with its location. For a failed invariant it is the constraint
 * key and human text (`Constraint obs-6 not met: dataAbsentReason SHALL only be present if …`), the element it was
 * checked on, and the invariant's FHIRPath, which the library gives as a JSON object in `diagnostics`.
 */
function sentence(issue: OperationOutcomeIssue): string {
  const where = issue.expression?.join(', ') ?? '';
  const text = issue.details?.text ?? issue.diagnostics ?? 'invalid';
  if (issue.code === 'invariant') {
    let fhirpath: string | undefined;
    try {
      fhirpath = (JSON.parse(issue.diagnostics ?? '') as { fhirpath?: string }).fhirpath;
    } catch {
      fhirpath = undefined; // not the library's JSON: keep its text as is
    }
    return `${text} (at ${where}${fhirpath ? `; invariant: ${fhirpath}` : ''})`;
  }
  if (issue.diagnostics && issue.diagnostics !== text) return issue.diagnostics;
  return `${text} (${where})`;
}

/** R4's base64Binary allows whitespace between groups (`(\s*([0-9a-zA-Z\+\=]){4}\s*)+`); the library's check does not. */
const R4_BASE64 = /^(\s*([0-9a-zA-Z+/=]){4}\s*)+$/;

function isValidBase64WithWhitespace(issue: OperationOutcomeIssue, resource: Resource): boolean {
  if (issue.details?.text !== 'Invalid base64Binary format' || !issue.expression?.[0]) return false;
  const values = evalFhirPath(issue.expression[0], resource);
  return values.length === 1 && typeof values[0] === 'string' && /\s/.test(values[0]) && R4_BASE64.test(values[0]);
}
