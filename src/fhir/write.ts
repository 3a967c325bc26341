/**
 * The one way in for system writes (facades, device filing, audit): entries in, typed results out. It runs the
 * entries exactly as a transaction or batch Bundle POSTed to /fhir runs (bundle.ts: conditional creates under
 * advisory locks, urn:uuid references, versions, index rows, outbox hooks), so a facade's write and a client's
 * write cannot differ; what it adds is an answer a program can use without parsing Location headers.
 */
import type { Bundle, BundleEntry, OperationOutcome } from '@medplum/fhirtypes';
import type { Tx } from '../db/database.js';
import { systemAccess } from './access.js';
import { runEntries } from './bundle.js';
import { badRequest, FhirError } from './outcome.js';
import type { FhirResponse, FhirRouter } from './router.js';

/** What one entry wrote (or, for a conditional create that matched, found). */
export interface WrittenEntry {
  ok: true;
  /** 201 when created, 200 when updated, patched or matched by a conditional create. */
  status: number;
  /** matched: a conditional create (ifNoneExist) found this resource and wrote nothing. */
  action: 'created' | 'updated' | 'matched';
  resourceType: string;
  id: string;
  versionId: string;
  /** `resourceType/id`, as a Reference.reference. */
  reference: string;
}

/** A batch entry that failed; the others were still processed. */
export interface FailedEntry {
  ok: false;
  status: number;
  outcome: OperationOutcome;
}

export interface WriteRequest {
  /** Who writes, as AccessPolicy.actor: 'hl7v2', 'dicom', 'facade:devices', 'smart:audit'. */
  actor: string;
  /** Bundle entries with a request (POST, PUT or PATCH); `fullUrl` urn:uuids may be referenced between them. */
  entries: BundleEntry[];
  /** The caller's transaction: the entries commit (or roll back) with the rest of its work. */
  tx?: Tx;
}

export interface SystemWriter {
  /** All entries or none: a failure throws a FhirError naming the entry (`Bundle.entry[i]: …`), and nothing is written. */
  transaction(req: WriteRequest): Promise<WrittenEntry[]>;
  /** Each entry on its own: a failure is that entry's result. */
  batch(req: WriteRequest): Promise<Array<WrittenEntry | FailedEntry>>;
}

const WRITES = new Set(['POST', 'PUT', 'PATCH']);

export function systemWriter(router: FhirRouter): SystemWriter {
  const run = (type: 'transaction' | 'batch', req: WriteRequest) => {
    req.entries.forEach((e, i) => {
      // Reads and deletes have no version to report; they are not system writes.
      if (e.request && !WRITES.has(e.request.method)) {
        throw badRequest(`entry ${i}: a system write takes POST, PUT or PATCH entries, not ${e.request.method}`, `Bundle.entry[${i}].request.method`);
      }
    });
    const http = { method: 'POST' as const, path: '', query: [], headers: {}, access: systemAccess(req.actor), tx: req.tx };
    return runEntries(router, http, router.ctx, type, req.entries);
  };
  return {
    async transaction(req) {
      return (await run('transaction', req)).map((r) => written(r as FhirResponse));
    },
    async batch(req) {
      return (await run('batch', req)).map((r) => (r instanceof FhirError ? { ok: false as const, status: r.status, outcome: r.outcome } : written(r)));
    },
  };
}

function written(r: FhirResponse): WrittenEntry {
  // Every POST, PUT and PATCH handler answers with its version (router.ts writeResponse/readResponse).
  const v = r.version as NonNullable<FhirResponse['version']>;
  return { ok: true, status: r.status, action: v.action, resourceType: v.resourceType, id: v.id, versionId: v.versionId, reference: `${v.resourceType}/${v.id}` };
}

/**
 * A transaction-response Bundle (without resource bodies, as under `Prefer: return=minimal`) for callers that answer
 * with one, such as the held-reading assignment of the admin API.
 */
export function responseBundle(written: WrittenEntry[]): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'transaction-response',
    entry: written.map((w) => ({
      response: {
        status: w.status === 201 ? '201 Created' : '200 OK',
        ...(w.action === 'matched' ? {} : { location: `${w.reference}/_history/${w.versionId}` }),
        etag: `W/"${w.versionId}"`,
      },
    })),
  };
}
