import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, BundleEntryResponse, Resource } from '@medplum/fhirtypes';
import type { Tx } from '../db/database.js';
import { ConfluxError } from '../errors.js';
import { badRequest, FhirError, outcome, preconditionFailed } from './outcome.js';
import { parseQuery } from './repository.js';
import type { FhirRequest, FhirResponse, FhirRouter, HttpMethod, RouterContext } from './router.js';
import { searchIds } from './search/index.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
/** Transaction processing order (FHIR R4 3.1.0.11.2): DELETE, POST, PUT/PATCH, then GET/HEAD. */
const ORDER: Record<string, number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };
const REASONS: Record<number, string> = { 200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified' };

interface PlannedEntry {
  index: number;
  method: HttpMethod;
  /** Path below the base and query, after conditional PUTs were turned into PUT Type/id. */
  path: string;
  query: Array<[string, string]>;
  headers: Record<string, string | undefined>;
  body?: unknown;
  assignedId?: string;
  /** A conditional PUT that matched nothing and got a fresh id: there is no current version to lock. */
  knownAbsent?: boolean;
}

/** Wires batch/transaction processing into the router, dispatching every entry back through `router.handle`. */
export function installBundleProcessor(router: FhirRouter): void {
  router.setBundleProcessor((req, ctx) => processBundle(router, req, ctx));
}

async function processBundle(router: FhirRouter, req: FhirRequest, ctx: RouterContext): Promise<FhirResponse> {
  const bundle = req.body as Bundle | undefined;
  if (!bundle || bundle.resourceType !== 'Bundle') throw badRequest('POST to the FHIR base needs a Bundle', 'Bundle');
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw badRequest(`Bundle.type must be "transaction" or "batch", not "${bundle.type}"`, 'Bundle.type');
  }
  const minimal = /return=minimal/.test(req.headers.prefer ?? '');
  const responses = await runEntries(router, req, ctx, bundle.type, bundle.entry ?? []);
  const entry = responses.map((r, i) => (r instanceof FhirError ? errorEntry(r) : toEntry(r, minimal)));
  return { status: 200, resource: { resourceType: 'Bundle', type: `${bundle.type}-response`, entry } };
}

/**
 * Runs the entries of a batch or transaction through `router.handle`, in FHIR's processing order. A transaction
 * answers every entry or throws (naming the entry) and writes nothing; a batch answers each entry or its error.
 * Used by POST /fhir and, in-process, by the system write port (write.ts).
 */
export async function runEntries(
  router: FhirRouter,
  req: FhirRequest,
  ctx: RouterContext,
  type: 'transaction' | 'batch',
  entries: BundleEntry[],
): Promise<Array<FhirResponse | FhirError>> {
  entries.forEach((e, i) => checkEntry(e, i));
  if (type === 'batch') {
    const responses: Array<FhirResponse | FhirError> = [];
    for (let i = 0; i < entries.length; i++) {
      try {
        responses.push(await router.handle(toRequest(planEntry(entries[i], i, ctx.baseUrl), req)));
      } catch (err) {
        responses.push(atEntry(err, i));
      }
    }
    return responses;
  }
  const run = async (outer: Tx): Promise<FhirResponse[]> => {
    const tx = ctx.repo.batchWrites(outer);
    const planned = entries.map((e, i) => planEntry(e, i, ctx.baseUrl));
    const ids = await resolveIdentities(tx, entries, planned, ctx);
    for (const p of planned) {
      if (p.body) p.body = await rewriteReferences(tx, p.body, ids, p.index);
    }
    const results: FhirResponse[] = new Array(entries.length);
    const order = [...planned].sort((a, b) => ORDER[a.method] - ORDER[b.method] || a.index - b.index);
    for (const p of order) {
      try {
        results[p.index] = await router.handle(toRequest(p, req, tx));
      } catch (err) {
        throw atEntry(err, p.index);
      }
    }
    await tx.flush();
    return results;
  };
  return req.tx ? run(req.tx) : ctx.repo.db.transaction(run);
}

function checkEntry(e: BundleEntry, i: number): void {
  const method = e.request?.method;
  if (!method || !METHODS.has(method)) throw badRequest(`Bundle.entry[${i}].request.method is missing or invalid`, `Bundle.entry[${i}].request.method`);
  if (!e.request?.url) throw badRequest(`Bundle.entry[${i}].request.url is missing`, `Bundle.entry[${i}].request.url`);
  if ((method === 'POST' || method === 'PUT') && !e.resource) {
    throw badRequest(`Bundle.entry[${i}] (${method}) has no resource`, `Bundle.entry[${i}].resource`);
  }
}

function planEntry(e: BundleEntry, index: number, baseUrl: string): PlannedEntry {
  const request = e.request as NonNullable<BundleEntry['request']>;
  let url = request.url;
  if (url.startsWith(baseUrl)) url = url.slice(baseUrl.length);
  url = url.replace(/^\/+/, '');
  const q = url.indexOf('?');
  const method = (request.method === 'HEAD' ? 'GET' : request.method) as HttpMethod;
  return {
    index,
    method,
    path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? [] : parseQuery(url.slice(q + 1)),
    headers: {
      'if-none-exist': request.ifNoneExist,
      'if-match': request.ifMatch,
      'if-none-match': request.ifNoneMatch,
      'if-modified-since': request.ifModifiedSince,
    },
    body: e.resource,
  };
}

/**
 * Decides, before anything is written, which id every POST and conditional PUT will have, so that
 * `urn:uuid:` fullUrls can be rewritten in every entry (including entries processed earlier).
 */
async function resolveIdentities(
  tx: Tx,
  entries: BundleEntry[],
  planned: PlannedEntry[],
  ctx: RouterContext,
): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  // Every condition of the Bundle is locked at once (one round trip instead of one per entry)…
  const conditionOf = (p: PlannedEntry): [string, string] | undefined => {
    if (p.path.includes('/')) return undefined;
    if (p.method === 'POST' && p.headers['if-none-exist']) return [p.path, p.headers['if-none-exist']];
    if (p.method === 'PUT' && p.query.length > 0) return [p.path, new URLSearchParams(p.query).toString()];
    return undefined;
  };
  const conditional = planned.filter((p) => conditionOf(p) !== undefined);
  const conditions = conditional.map((p) => conditionOf(p)!);
  await ctx.repo.lockConditions(tx, conditions);
  // …and settled at once, under those locks: one round trip for all of them.
  const matches = new Map<PlannedEntry, string | undefined>();
  const found = await ctx.repo
    .findConditionals(
      tx,
      conditions.map(([resourceType, query], i) => ({ resourceType, query, what: conditional[i].method === 'POST' ? 'If-None-Exist' : 'conditional update' })),
    )
    .catch((err: unknown) => {
      const at = (err as { searchIndex?: number }).searchIndex;
      throw at === undefined ? err : atEntry(err, conditional[at].index);
    });
  conditional.forEach((p, i) => matches.set(p, found[i]));
  for (const p of planned) {
    const fullUrl = entries[p.index].fullUrl;
    const type = p.path.split('/')[0];
    let target: string | undefined;
    if (p.method === 'POST' && !p.path.includes('/')) {
      const ifNoneExist = p.headers['if-none-exist'];
      const existing = ifNoneExist ? matches.get(p) : undefined;
      // The condition is settled here, under its lock: a match becomes a read of the existing resource
      // (what a conditional create answers), no match a plain create with the pre-assigned id.
      delete p.headers['if-none-exist'];
      if (existing) {
        p.method = 'GET';
        p.path = `${type}/${existing}`;
        p.body = undefined;
      }
      p.assignedId = existing ?? randomUUID();
      target = `${type}/${p.assignedId}`;
    } else if (p.method === 'PUT' && !p.path.includes('/') && p.query.length > 0) {
      const existing = matches.get(p);
      const bodyId = (p.body as Resource).id;
      const id = existing ?? (bodyId && !bodyId.startsWith('urn:') ? bodyId : randomUUID());
      p.knownAbsent = !existing && id !== bodyId;
      p.path = `${type}/${id}`;
      p.query = [];
      p.body = { ...(p.body as Resource), id };
      target = p.path;
    } else if (p.method === 'PUT') {
      target = p.path;
    }
    if (target && fullUrl) {
      if (ids.has(fullUrl)) throw badRequest(`Bundle.entry[${p.index}].fullUrl "${fullUrl}" appears twice`, `Bundle.entry[${p.index}].fullUrl`);
      ids.set(fullUrl, target);
      // Absolute fullUrls (http://other/fhir/Patient/1) are also matched by their relative tail.
      const m = /([A-Za-z]+\/[A-Za-z0-9\-.]{1,64})$/.exec(fullUrl);
      if (m && !fullUrl.startsWith('urn:') && m[1] !== target) ids.set(m[1], target);
    }
  }
  return ids;
}

/** Rewrites urn:uuid: and conditional (`Patient?identifier=a|b`) references anywhere in `value`. */
async function rewriteReferences(tx: Tx, value: unknown, ids: Map<string, string>, index: number): Promise<unknown> {
  if (Array.isArray(value)) {
    const out = [];
    for (const v of value) out.push(await rewriteReferences(tx, v, ids, index));
    return out;
  }
  if (!value || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === 'reference' && typeof v === 'string') out[k] = await resolveReference(tx, v, ids, index);
    else out[k] = await rewriteReferences(tx, v, ids, index);
  }
  return out;
}

async function resolveReference(tx: Tx, ref: string, ids: Map<string, string>, index: number): Promise<string> {
  const mapped = ids.get(ref);
  if (mapped) return mapped;
  if (ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) {
    throw badRequest(`Bundle.entry[${index}] references ${ref}, which no entry's fullUrl declares`, `Bundle.entry[${index}].resource`);
  }
  const m = /^([A-Z][A-Za-z]+)\?(.+)$/.exec(ref);
  if (!m) return ref;
  const found = await searchIds(tx, m[1], parseQuery(m[2]), 2);
  if (found.length !== 1) {
    throw preconditionFailed(`Bundle.entry[${index}]: conditional reference ${ref} matched ${found.length} resources; it must match exactly one`);
  }
  return `${m[1]}/${found[0]}`;
}

function toRequest(p: PlannedEntry, outer: FhirRequest, tx?: Tx): FhirRequest {
  return {
    method: p.method,
    path: p.path,
    query: p.query,
    headers: { ...p.headers, prefer: outer.headers.prefer },
    body: p.body,
    access: outer.access,
    tx,
    assignedId: p.assignedId,
    knownAbsent: p.knownAbsent,
  };
}

function toEntry(res: FhirResponse, minimal: boolean): BundleEntry {
  const h = res.headers ?? {};
  const response: BundleEntryResponse = {
    status: `${res.status} ${REASONS[res.status] ?? ''}`.trim(),
    ...(h.Location || h['Content-Location'] ? { location: h.Location ?? h['Content-Location'] } : {}),
    ...(h.ETag ? { etag: h.ETag } : {}),
    ...(h['Last-Modified'] ? { lastModified: new Date(h['Last-Modified']).toISOString() } : {}),
  };
  const resource = res.resource ?? (res.json ? (JSON.parse(res.json) as Resource) : undefined);
  return { ...(resource && !minimal ? { resource } : {}), response };
}

function errorEntry(e: FhirError): BundleEntry {
  return { response: { status: String(e.status), outcome: e.outcome } };
}

/** Prefixes the failure with the entry it came from, so the client can find it in a 500-entry Bundle. */
function atEntry(failure: unknown, index: number): FhirError {
  if ((failure as { wholeTransaction?: boolean }).wholeTransaction) return failure as FhirError;
  let err: FhirError;
  if (failure instanceof FhirError) err = failure;
  else if (failure instanceof ConfluxError) err = new FhirError(failure.httpStatus, failure.toOutcome());
  else return new FhirError(500, outcome('error', 'exception', `Bundle.entry[${index}]: ${(failure as Error).message}`));
  const issues = (err.outcome.issue ?? []).map((issue) => ({
    ...issue,
    diagnostics: `Bundle.entry[${index}]: ${issue.diagnostics ?? issue.details?.text ?? ''}`,
    ...(issue.expression ? { expression: issue.expression.map((x) => `Bundle.entry[${index}].resource.${x.replace(/^[A-Z][A-Za-z]+\./, '')}`) } : {}),
  }));
  return new FhirError(err.status, { ...err.outcome, issue: issues }, err.headers);
}
