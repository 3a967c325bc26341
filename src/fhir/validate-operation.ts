/**
 * `$validate` (http://hl7.org/fhir/OperationDefinition/Resource-validate): would this content be accepted, in general
 * or as a create, an update or a delete? The same validation the write path runs (src/fhir/validation.ts), nothing
 * written. The answer is 200 with an OperationOutcome listing every issue (or one "All OK"); a request the operation
 * cannot evaluate (wrong type, unknown mode, no resource) is a 4xx.
 *
 *   POST [base]/[type]/$validate           body: the resource, or Parameters { resource, mode }
 *   POST [base]/[type]/[id]/$validate      the same against an existing resource (mode update / delete)
 *   GET  [base]/[type]/[id]/$validate?mode=delete
 */
import type { OperationOutcome, OperationOutcomeIssue, Parameters, Resource } from '@medplum/fhirtypes';
import type { Interaction } from './access.js';
import { allOk, badRequest, FhirError } from './outcome.js';
import type { FhirRequest, FhirResponse, FhirRouter, RouterContext } from './router.js';
import { assertResourceType, validationIssues } from './validation.js';

const MODES = ['create', 'update', 'delete'] as const;
type Mode = (typeof MODES)[number];

/** The resource and mode from a Parameters body, a bare resource body, or the query (`mode`). */
function input(req: FhirRequest): { resource?: Resource; mode?: Mode } {
  const body = req.body as Resource | undefined;
  let resource: Resource | undefined = body;
  let mode = req.query.find(([k]) => k === 'mode')?.[1];
  if (body?.resourceType === 'Parameters') {
    const params = (body as Parameters).parameter ?? [];
    resource = params.find((p) => p.name === 'resource')?.resource;
    mode = params.find((p) => p.name === 'mode')?.valueCode ?? mode;
  }
  if (mode !== undefined && !(MODES as readonly string[]).includes(mode)) {
    throw badRequest(`$validate mode "${mode}" is not one of create, update, delete`, 'Parameters.parameter.where(name=\'mode\')');
  }
  return { resource, mode: mode as Mode | undefined };
}

async function validate(req: FhirRequest, type: string, id: string | undefined, ctx: RouterContext): Promise<FhirResponse> {
  assertResourceType(type);
  const { resource, mode } = input(req);
  const interaction: Interaction = mode ?? 'operation';
  req.access.assertType(type, interaction);
  if (mode && mode !== 'create' && !id) throw badRequest(`$validate with mode ${mode} names the resource: POST /${type}/[id]/$validate`);
  const issues: OperationOutcomeIssue[] = [];
  const current = id ? await ctx.repo.read(type, id, req.tx).catch((err: unknown) => {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) return undefined;
    throw err;
  }) : undefined;
  if (mode === 'delete') {
    if (!current) issues.push({ severity: 'error', code: 'not-found', diagnostics: `${type}/${id} does not exist; there is nothing to delete`, expression: [type] });
  } else {
    if (!resource) throw badRequest(`$validate needs the ${type} to check: send it as the body, or as the "resource" parameter of a Parameters body`);
    if (resource.resourceType !== type) {
      throw badRequest(`The resource is a ${resource.resourceType ?? 'resource without resourceType'}, but this is /${type}/$validate`, 'Resource.resourceType');
    }
    if (id && resource.id !== id) {
      issues.push({ severity: 'error', code: 'invalid', diagnostics: `Resource id "${resource.id ?? ''}" does not match the id in the URL (${id})`, expression: [`${type}.id`] });
    }
    if (mode === 'update' && !current) {
      issues.push({ severity: 'information', code: 'informational', diagnostics: `${type}/${id} does not exist yet: this update would create it`, expression: [type] });
    }
    if (current) req.access.assertResource(JSON.parse(current.content as string) as Resource, 'update');
    req.access.assertResource(resource, mode === 'update' ? 'update' : 'create');
    issues.push(...validationIssues(resource));
  }
  const result: OperationOutcome = issues.length ? { resourceType: 'OperationOutcome', issue: issues } : allOk(`The ${type} is valid${mode ? ` for ${mode}` : ''}`);
  return { status: 200, resource: result };
}

export function installValidateOperation(router: FhirRouter): void {
  router.add('POST', ':type/$validate', (req, { type }, ctx) => validate(req, type!, undefined, ctx));
  router.add('POST', ':type/:id/$validate', (req, { type, id }, ctx) => validate(req, type!, id, ctx));
  router.add('GET', ':type/:id/$validate', (req, { type, id }, ctx) => validate(req, type!, id, ctx));
  router.operations.push({ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate', level: 'type' });
}
