/** The FHIR route of `Observation/$lastn` (GET with query parameters, POST with a Parameters body). */
import type { Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { badRequest } from '../outcome.js';
import type { FhirRequest, FhirResponse, RouterContext } from '../router.js';
import { runLastn } from './lastn.js';

export const LASTN_DEFINITION = 'http://hl7.org/fhir/OperationDefinition/Observation-lastn';

/** A Parameters parameter as the string its query form would carry. */
function paramText(p: ParametersParameter): string {
  if (p.valueReference?.reference !== undefined) return p.valueReference.reference;
  if (p.valueCoding) return p.valueCoding.system ? `${p.valueCoding.system}|${p.valueCoding.code ?? ''}` : (p.valueCoding.code ?? '');
  for (const k of ['valueString', 'valueCode', 'valueUri', 'valueId', 'valueInteger', 'valuePositiveInt', 'valueUnsignedInt'] as const) {
    if (p[k] !== undefined) return String(p[k]);
  }
  throw badRequest(`$lastn: parameter "${p.name}" needs a value (valueString, valueReference, valueCoding or valuePositiveInt)`, p.name);
}

function bodyParams(body: unknown): Array<[string, string]> {
  if (body === undefined || body === null || (typeof body === 'object' && Object.keys(body).length === 0)) return [];
  const p = body as Parameters;
  if (typeof body !== 'object' || p.resourceType !== 'Parameters') throw badRequest('POST Observation/$lastn takes a Parameters resource as its body');
  return (p.parameter ?? []).map((x) => [x.name, paramText(x)]);
}

export async function lastnHandler(req: FhirRequest, _params: Record<string, string>, ctx: RouterContext): Promise<FhirResponse> {
  req.access.assertType('Observation', 'search');
  const params = [...req.query, ...(req.method === 'POST' ? bodyParams(req.body) : [])];
  const bundle = await runLastn(req.tx ?? ctx.repo.db, { params, baseUrl: ctx.baseUrl, access: req.access.searchAccess() });
  return { status: 200, resource: bundle };
}
