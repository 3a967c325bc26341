import type { OperationOutcomeIssue, Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { badRequest, FhirError } from '../fhir/outcome.js';
import { isResourceType } from '../fhir/validation.js';

export type ExportLevel = 'system' | 'patient' | 'group';

export const OUTPUT_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'ndjson'];

/** includeAssociatedData values this server understands (see the worker for what each adds). */
export const SUPPORTED_ASSOCIATED_DATA = ['LatestProvenanceResources'];

/** A kick-off request after validation: everything the worker needs, stored as the job's `request` column. */
export interface ExportRequest {
  level: ExportLevel;
  groupId?: string;
  /** `_type`; undefined → every type the caller may see. */
  types?: string[];
  /** `_since` as an ISO instant. */
  since?: string;
  /** `_typeFilter` per type: the alternatives (OR) each a list of search parameters (AND). */
  typeFilters: Record<string, Array<Array<[string, string]>>>;
  /** `_elements`: names for every type, and per-type names from "Type.element". */
  elements?: { all: string[]; byType: Record<string, string[]> };
  /** 'Patient/<id>' whose compartments are exported (patient parameter, or the Group's members). */
  patients?: string[];
  outputFormat: string;
  includeAssociatedData: string[];
}

export interface ParsedKickoff {
  request: ExportRequest;
  /** Warnings for the manifest's error file (unsupported parameters under lenient handling). */
  issues: OperationOutcomeIssue[];
}

const KNOWN = new Set(['_outputFormat', '_since', '_type', '_typeFilter', '_elements', 'patient', 'includeAssociatedData']);
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;
const ELEMENT = /^[A-Za-z][A-Za-z0-9_]*$/;

/** Kick-off preconditions (Bulk Data IG v2.0 "Headers"): both are required, anything else is a 400. */
export function checkKickoffHeaders(headers: Record<string, string | undefined>): { strict: boolean } {
  const prefer = headers.prefer ?? '';
  if (!/(^|[\s,;])respond-async($|[\s,;])/i.test(prefer)) {
    throw badRequest('Bulk export needs the header "Prefer: respond-async"');
  }
  const accept = headers.accept ?? '';
  if (!accept.split(',').some((a) => a.split(';')[0].trim().toLowerCase() === 'application/fhir+json')) {
    throw badRequest(`Bulk export needs the header "Accept: application/fhir+json" (got "${accept || 'none'}")`);
  }
  return { strict: /handling\s*=\s*strict/i.test(prefer) };
}

/** Flattens GET query pairs or a POST Parameters body into name/value pairs. */
export function kickoffPairs(method: string, query: Array<[string, string]>, body: unknown): Array<[string, string]> {
  if (method === 'GET' || body === undefined) return query;
  const params = body as Parameters;
  if (!params || typeof params !== 'object' || params.resourceType !== 'Parameters') {
    throw badRequest('POST $export needs a Parameters resource as its body (Content-Type: application/fhir+json)');
  }
  const out: Array<[string, string]> = [...query];
  for (const p of params.parameter ?? []) out.push([String(p.name), parameterValue(p)]);
  return out;
}

function parameterValue(p: ParametersParameter): string {
  if (p.valueReference) {
    const ref = p.valueReference.reference;
    if (!ref) throw badRequest(`Parameter "${p.name}" needs valueReference.reference`, `Parameters.parameter.where(name='${p.name}')`);
    return ref;
  }
  for (const [k, v] of Object.entries(p)) {
    if (k.startsWith('value') && (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number')) return String(v);
  }
  throw badRequest(`Parameter "${p.name}" has no supported value[x] (string, code, instant, reference, ...)`, `Parameters.parameter.where(name='${p.name}')`);
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * Validates the kick-off parameters. Malformed values are always a 400; parameters this server does not
 * support are a 400 under `Prefer: handling=strict` and a warning in the error file otherwise.
 */
export function parseKickoff(level: ExportLevel, pairs: Array<[string, string]>, strict: boolean): ParsedKickoff {
  const issues: OperationOutcomeIssue[] = [];
  const unsupported = (name: string, msg: string) => {
    if (strict) throw FhirError.of(400, 'not-supported', `${msg} (Prefer: handling=strict)`, name);
    issues.push({ severity: 'warning', code: 'not-supported', diagnostics: `${msg}; ignored`, expression: [name] });
  };
  const req: ExportRequest = { level, typeFilters: {}, outputFormat: 'application/fhir+ndjson', includeAssociatedData: [] };
  const typeFilterRaw: string[] = [];
  for (const [name, value] of pairs) {
    if (!KNOWN.has(name)) {
      unsupported(name, `Parameter "${name}" is not supported by $export`);
      continue;
    }
    switch (name) {
      case '_outputFormat':
        if (!OUTPUT_FORMATS.includes(value)) {
          throw badRequest(`_outputFormat "${value}" is not supported; use one of ${OUTPUT_FORMATS.join(', ')}`, '_outputFormat');
        }
        req.outputFormat = 'application/fhir+ndjson';
        break;
      case '_since':
        if (!INSTANT.test(value) || Number.isNaN(Date.parse(value))) {
          throw badRequest(`_since "${value}" is not a FHIR instant (e.g. 2024-01-31T12:00:00Z, with a time zone)`, '_since');
        }
        req.since = new Date(value).toISOString();
        break;
      case '_type':
        for (const t of list(value)) {
          if (!isResourceType(t)) throw badRequest(`_type names an unknown resource type "${t}"`, '_type');
          req.types = [...new Set([...(req.types ?? []), t])];
        }
        break;
      case '_typeFilter':
        // Each value is one query; several queries (repeated or comma-separated) are alternatives. Split only
        // at commas that start a new "Type?" so a comma inside a query (code=a,b) stays a search OR.
        typeFilterRaw.push(...value.split(/,(?=\s*[A-Z][A-Za-z]+\?)/).map((s) => s.trim()).filter(Boolean));
        break;
      case '_elements': {
        req.elements ??= { all: [], byType: {} };
        for (const e of list(value)) {
          const dot = e.indexOf('.');
          const [type, el] = dot < 0 ? [undefined, e] : [e.slice(0, dot), e.slice(dot + 1)];
          if (!ELEMENT.test(el) || (type !== undefined && !isResourceType(type))) {
            throw badRequest(`_elements entry "${e}" is not "element" or "ResourceType.element"`, '_elements');
          }
          if (type) (req.elements.byType[type] ??= []).push(el);
          else req.elements.all.push(el);
        }
        break;
      }
      case 'patient': {
        if (level === 'system') throw badRequest('The patient parameter applies to Patient and Group level exports only', 'patient');
        for (const ref of list(value)) {
          const m = /^(?:.*\/)?Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
          if (!m) throw badRequest(`patient "${ref}" is not a Patient reference (Patient/<id>)`, 'patient');
          req.patients = [...new Set([...(req.patients ?? []), `Patient/${m[1]}`])];
        }
        break;
      }
      case 'includeAssociatedData':
        for (const v of list(value)) {
          if (SUPPORTED_ASSOCIATED_DATA.includes(v)) req.includeAssociatedData.push(v);
          else unsupported('includeAssociatedData', `includeAssociatedData "${v}" is not supported (supported: ${SUPPORTED_ASSOCIATED_DATA.join(', ')})`);
        }
        break;
    }
  }
  for (const f of typeFilterRaw) {
    const q = f.indexOf('?');
    const type = q < 0 ? f : f.slice(0, q);
    if (!isResourceType(type) || q < 0) throw badRequest(`_typeFilter "${f}" is not "ResourceType?search-parameters"`, '_typeFilter');
    if (req.types && !req.types.includes(type)) {
      throw badRequest(`_typeFilter "${f}" filters ${type}, which is not in _type`, '_typeFilter');
    }
    const params = [...new URLSearchParams(f.slice(q + 1))];
    if (params.length === 0) throw badRequest(`_typeFilter "${f}" has no search parameters`, '_typeFilter');
    (req.typeFilters[type] ??= []).push(params);
  }
  return { request: req, issues };
}
