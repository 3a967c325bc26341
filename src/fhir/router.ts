import type { Bundle, OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { Queryable, Tx } from '../db/database.js';
import type { ReadRouting } from '../db/read-replica.js';
import type { AccessPolicy, Interaction } from './access.js';
import { readHistory } from './history.js';
import { allOk, badRequest, FhirError, forbidden, notFound } from './outcome.js';
import type { Repository, SearchParams, StoredVersion } from './repository.js';
import { versionHeaders } from './versions.js';
import { compartmentApplies, searchResources } from './search/index.js';
import { LASTN_DEFINITION, lastnHandler } from './search/lastn-route.js';
import { assertResourceType, assertValidId } from './validation.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** A FHIR interaction, independent of HTTP: Express, batch/transaction entries and facades all build one. */
export interface FhirRequest {
  method: HttpMethod;
  /** Path below the FHIR base without leading slash: "", "Patient", "Patient/1/_history/2", "$export". */
  path: string;
  query: SearchParams;
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  /** Parsed JSON body, if any. */
  body?: unknown;
  access: AccessPolicy;
  /** Set inside a transaction Bundle: every entry shares it. */
  tx?: Tx;
  /** Set by a transaction for POST entries whose urn:uuid was resolved to an id up front. */
  assignedId?: string;
  /** Set by a transaction for a conditional PUT that matched nothing and was given a fresh id. */
  knownAbsent?: boolean;
}

export interface FhirResponse {
  status: number;
  headers?: Record<string, string>;
  /** The body as an object, or `json` when it is already serialised (reads stream stored JSON as is). */
  resource?: Resource;
  json?: string;
  /** For writes: the OperationOutcome returned under `Prefer: return=OperationOutcome`. */
  outcome?: OperationOutcome;
  /** The version a read or write answered with, typed, so in-process callers need not parse Location or the body. */
  version?: { resourceType: string; id: string; versionId: string; action: 'created' | 'updated' | 'matched' };
}

export interface RouterContext {
  repo: Repository;
  /** Searches and history on a read replica, with read-your-writes (src/db/read-replica.ts); absent: the primary. */
  reads?: ReadRouting;
  baseUrl: string;
  defaultPageSize: number;
  maxPageSize: number;
}

type Handler = (req: FhirRequest, params: Record<string, string>, ctx: RouterContext) => Promise<FhirResponse>;

interface Route {
  method: HttpMethod;
  /** Path segments; ':name' captures, '$op' literal operations. */
  segments: string[];
  handler: Handler;
}

/**
 * One table of every FHIR interaction (after Medplum's fhir-router). Operations such as $export are
 * added by their modules with `addRoute`; the CapabilityStatement reads the same table.
 */
export class FhirRouter {
  private readonly routes: Route[] = [];
  readonly operations: Array<{ name: string; definition: string; level: 'system' | 'type' | 'instance'; types?: string[] }> = [];

  constructor(readonly ctx: RouterContext) {
    this.add('GET', '', searchSystem);
    this.add('POST', '', (req, _p, ctx) => this.processBundle(req, ctx));
    this.add('GET', '_history', historyHandler);
    this.add('GET', ':type', searchType);
    this.add('POST', ':type/_search', searchType);
    this.add('POST', ':type', create);
    this.add('PUT', ':type', conditionalUpdate);
    this.add('DELETE', ':type', conditionalDelete);
    this.add('PATCH', ':type', conditionalPatch);
    this.add('GET', ':type/_history', historyHandler);
    this.add('GET', ':type/:id', read);
    this.add('PUT', ':type/:id', update);
    this.add('PATCH', ':type/:id', patch);
    this.add('DELETE', ':type/:id', deleteHandler);
    this.add('GET', ':type/:id/_history', historyHandler);
    this.add('GET', ':type/:id/_history/:vid', vread);
    for (const m of ['GET', 'POST'] as const) this.add(m, 'Observation/$lastn', lastnHandler);
    this.operations.push({ name: 'lastn', definition: LASTN_DEFINITION, level: 'type', types: ['Observation'] });
  }

  /** Routes added later take precedence, so `$export` wins over `:type`. */
  add(method: HttpMethod, pattern: string, handler: Handler): void {
    this.routes.unshift({ method, segments: pattern === '' ? [] : pattern.split('/'), handler });
  }

  private processBundleImpl?: (req: FhirRequest, ctx: RouterContext) => Promise<FhirResponse>;
  /** Batch/transaction processing lives in bundle.ts; it dispatches entries back through `handle`. */
  setBundleProcessor(fn: (req: FhirRequest, ctx: RouterContext) => Promise<FhirResponse>): void {
    this.processBundleImpl = fn;
  }
  private processBundle(req: FhirRequest, ctx: RouterContext): Promise<FhirResponse> {
    if (!this.processBundleImpl) throw badRequest('Bundle processing is not available');
    return this.processBundleImpl(req, ctx);
  }

  async handle(req: FhirRequest): Promise<FhirResponse> {
    const parts = req.path.split('/').filter((p) => p !== '');
    let methodMismatch = false;
    for (const route of this.routes) {
      const params = match(route.segments, parts);
      if (!params) continue;
      if (route.method !== req.method) {
        methodMismatch = true;
        continue;
      }
      if (req.method === 'GET' || req.tx || !this.ctx.reads) return route.handler(req, params, this.ctx);
      // Anything but a read may have written: the caller's next searches wait for the replica to have it.
      try {
        return await route.handler(req, params, this.ctx);
      } finally {
        this.ctx.reads.noteWrite(req.access.actor);
      }
    }
    if (methodMismatch) throw FhirError.of(405, 'not-supported', `${req.method} is not supported on /${req.path}`);
    throw notFound(`No FHIR interaction matches ${req.method} /${req.path}`);
  }
}

function match(segments: string[], parts: string[]): Record<string, string> | undefined {
  if (segments.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s.startsWith(':')) {
      // `_history`, `_search` and `$op` are keywords, never a type or an id.
      if (parts[i].startsWith('_') || parts[i].startsWith('$')) return undefined;
      const name = s.slice(1);
      params[name] = decodeSegment(parts[i]);
      // An id that cannot exist (`%00`, 65 characters, a space) is refused here, before it reaches SQL.
      if (name === 'id') assertValidId(params[name]);
    } else if (s !== parts[i]) return undefined;
  }
  return params;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw badRequest(`The URL path segment "${segment}" is not valid percent-encoded UTF-8`);
  }
}

function check(req: FhirRequest, type: string, interaction: Interaction): void {
  assertResourceType(type);
  req.access.assertType(type, interaction);
}

function bodyResource(req: FhirRequest, type: string, id?: string): Resource {
  const body = req.body as Resource | undefined;
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest('Request body must be a FHIR resource (JSON object)');
  if (body.resourceType !== type) {
    throw badRequest(`resourceType "${String(body.resourceType)}" in the body does not match "${type}" in the URL`, 'resourceType');
  }
  if (id !== undefined && body.id !== undefined && body.id !== id) {
    throw badRequest(`id "${body.id}" in the body does not match "${id}" in the URL`, `${type}.id`);
  }
  return body;
}

/** A read answers 'matched': inside a transaction, a conditional create that found its resource becomes a read (bundle.ts). */
function readResponse(v: StoredVersion, status = 200): FhirResponse {
  return { status, headers: versionHeaders(v), json: v.content as string, version: { resourceType: v.resourceType, id: v.id, versionId: String(v.versionId), action: 'matched' } };
}

function writeResponse(
  ctx: RouterContext,
  r: { resource: Resource; created: boolean; json: string },
  message: string,
  /** What an existing resource's write did: a conditional create that matched, or an update. */
  existing: 'updated' | 'matched' = 'updated',
): FhirResponse {
  const { resourceType, id, meta } = r.resource;
  const location = `${ctx.baseUrl}/${resourceType}/${id}/_history/${meta?.versionId}`;
  return {
    status: r.created ? 201 : 200,
    headers: {
      ETag: `W/"${meta?.versionId}"`,
      'Last-Modified': new Date(meta?.lastUpdated as string).toUTCString(),
      ...(r.created ? { Location: location } : { 'Content-Location': location }),
    },
    json: r.json,
    outcome: allOk(message),
    version: { resourceType, id: id as string, versionId: String(meta?.versionId), action: r.created ? 'created' : existing },
  };
}

const read: Handler = async (req, { type, id }, ctx) => {
  check(req, type, 'read');
  const v = await ctx.repo.read(type, id, req.tx);
  assertVisible(req, v, 'read');
  return readResponse(v);
};

const vread: Handler = async (req, { type, id, vid }, ctx) => {
  check(req, type, 'vread');
  const v = await ctx.repo.vread(type, id, vid, req.tx);
  assertVisible(req, v, 'vread');
  return readResponse(v);
};

/** A stored version is parsed for the access check only when the caller's access has limits (searchAccess defined). */
function assertVisible(req: FhirRequest, v: StoredVersion, interaction: 'read' | 'vread'): void {
  if (req.access.searchAccess() === undefined) return;
  req.access.assertResource(JSON.parse(v.content as string) as Resource, interaction);
}

const create: Handler = async (req, { type }, ctx) => {
  check(req, type, 'create');
  const resource = bodyResource(req, type);
  req.access.assertResource(resource, 'create');
  const ifNoneExist = req.headers['if-none-exist'];
  const r = await ctx.repo.create(resource, { ifNoneExist, tx: req.tx, assignedId: req.assignedId });
  return writeResponse(ctx, r, r.created ? `Created ${type}/${r.resource.id}` : `Matched existing ${type}/${r.resource.id}; nothing created`, 'matched');
};

const update: Handler = async (req, { type, id }, ctx) => {
  check(req, type, 'update');
  const resource = { ...bodyResource(req, type, id), id };
  req.access.assertResource(resource, 'update');
  if (!req.knownAbsent) await assertCurrentVisible(req, ctx, type, id);
  const r = await ctx.repo.update(resource, { ifMatch: req.headers['if-match'], tx: req.tx, knownAbsent: req.knownAbsent });
  return writeResponse(ctx, r, r.created ? `Created ${type}/${id}` : `Updated ${type}/${id}`);
};

const conditionalUpdate: Handler = async (req, { type }, ctx) => {
  check(req, type, 'update');
  const query = new URLSearchParams(req.query).toString();
  if (!query) throw FhirError.of(405, 'not-supported', `PUT /${type} needs an id in the URL or search criteria`);
  const resource = bodyResource(req, type);
  req.access.assertResource(resource, 'update');
  const r = await ctx.repo.conditionalUpdate(resource, query, { tx: req.tx });
  return writeResponse(ctx, r, r.created ? `Created ${type}/${r.resource.id}` : `Updated ${type}/${r.resource.id}`);
};

const patch: Handler = async (req, { type, id }, ctx) => {
  check(req, type, 'patch');
  await assertCurrentVisible(req, ctx, type, id);
  const r = await ctx.repo.patch(type, id, req.body, { ifMatch: req.headers['if-match'], tx: req.tx });
  req.access.assertResource(r.resource, 'patch');
  return writeResponse(ctx, r, `Patched ${type}/${id}`);
};

const conditionalPatch: Handler = async (req, { type }, ctx) => {
  check(req, type, 'patch');
  const query = new URLSearchParams(req.query).toString();
  if (!query) throw FhirError.of(405, 'not-supported', `PATCH /${type} needs an id in the URL or search criteria`);
  const run = async (tx: Tx) => {
    const id = await ctx.repo.findConditional(tx, type, query, 'conditional patch');
    if (!id) throw notFound(`No ${type} matches ${query}`);
    return patch({ ...req, tx }, { type, id }, ctx);
  };
  return req.tx ? run(req.tx) : ctx.repo.db.transaction(run);
};

const deleteHandler: Handler = async (req, { type, id }, ctx) => {
  check(req, type, 'delete');
  await assertCurrentVisible(req, ctx, type, id);
  const r = await ctx.repo.delete(type, id, { ifMatch: req.headers['if-match'], tx: req.tx });
  return {
    status: 200,
    headers: r.versionId ? { ETag: `W/"${r.versionId}"` } : undefined,
    resource: allOk(r.deleted ? `Deleted ${type}/${id}` : `${type}/${id} did not exist or was already deleted`),
  };
};

const conditionalDelete: Handler = async (req, { type }, ctx) => {
  check(req, type, 'delete');
  const query = new URLSearchParams(req.query.filter(([k]) => k !== '_multiple')).toString();
  if (!query) throw FhirError.of(405, 'not-supported', `DELETE /${type} needs an id in the URL or search criteria`);
  const multiple = req.query.some(([k, v]) => k === '_multiple' && v === 'true') || req.headers['x-conditional-delete'] === 'multiple';
  const n = await ctx.repo.conditionalDelete(type, query, { multiple, tx: req.tx });
  return { status: 200, resource: allOk(`Deleted ${n} ${type} resource(s)`) };
};

/** Writes to an existing resource need it to be visible to the caller (no writes across compartments). */
async function assertCurrentVisible(req: FhirRequest, ctx: RouterContext, type: string, id: string): Promise<void> {
  if (req.access.searchAccess() === undefined) return;
  try {
    const current = await ctx.repo.readResource(type, id, req.tx);
    req.access.assertResource(current, 'update');
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) return;
    throw err;
  }
}

const historyHandler: Handler = async (req, { type, id }, ctx) => {
  if (type) check(req, type, 'history');
  const access = req.access.searchAccess();
  // History rows are not filtered by granular (query-restricted) scopes; type-level history is refused by the
  // policy's assertType, system-level history must be refused here.
  if (!type && access?.typeCriteria && Object.keys(access.typeCriteria).length) {
    throw forbidden(`System-level history is not available to a token with query-restricted scopes (${Object.keys(access.typeCriteria).join(', ')})`);
  }
  const allowed = access?.allowedTypes;
  const bundle = await readHistory(await readerFor(req, ctx), {
    resourceType: type,
    id,
    params: req.query,
    baseUrl: ctx.baseUrl,
    path: req.path,
    defaultCount: ctx.defaultPageSize,
    maxCount: ctx.maxPageSize,
    patientCompartments: type && !compartmentApplies(access, type) ? undefined : access?.patientCompartments,
    compartmentExempt: type ? undefined : access?.compartmentExempt,
    allowedTypes: allowed && allowed !== '*' ? allowed : undefined,
  });
  return { status: 200, resource: bundle };
};

const searchType: Handler = async (req, { type }, ctx) => {
  check(req, type, 'search');
  return { status: 200, resource: await runSearch(req, ctx, type) };
};

const searchSystem: Handler = async (req, _p, ctx) => {
  return { status: 200, resource: await runSearch(req, ctx, undefined) };
};

/** Inside a transaction its own connection; otherwise the replica when there is one and it has the caller's writes. */
async function readerFor(req: FhirRequest, ctx: RouterContext): Promise<Queryable> {
  if (req.tx) return req.tx;
  return ctx.reads ? ctx.reads.forRead(req.access.actor) : ctx.repo.db;
}

async function runSearch(req: FhirRequest, ctx: RouterContext, type: string | undefined): Promise<Bundle> {
  const handling = /handling=strict/.test(req.headers.prefer ?? '') ? 'strict' : 'lenient';
  // POST _search carries its parameters form-encoded in the body; the HTTP adapter merged them into query.
  return searchResources(await readerFor(req, ctx), {
    resourceType: type,
    params: req.query,
    baseUrl: ctx.baseUrl,
    handling,
    access: req.access.searchAccess(),
    defaultCount: ctx.defaultPageSize,
    maxCount: ctx.maxPageSize,
  });
}
