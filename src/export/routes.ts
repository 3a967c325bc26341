import express, { type NextFunction, type Request, type Response } from 'express';
import type { Group } from '@medplum/fhirtypes';
import type { BlobStore } from '../blob/index.js';
import type { AccessPolicy } from '../fhir/access.js';
import { FhirError, forbidden, notFound, outcome } from '../fhir/outcome.js';
import type { FhirRequest, FhirResponse, RouterContext } from '../fhir/router.js';
import { searchIds } from '../fhir/search/index.js';
import type { ExportJob, JobAccess, JobStore } from './jobs.js';
import { checkKickoffHeaders, type ExportLevel, kickoffPairs, parseKickoff } from './params.js';
import type { ExportSettings } from './settings.js';

export interface ExportDeps {
  jobs: JobStore;
  blobs: BlobStore;
  settings: ExportSettings;
  /** Public base URL (no trailing slash), read per request: tests learn their port only after listening. */
  baseUrl: () => string;
  fhirBaseUrl: () => string;
  wake: () => void;
}

export const statusUrl = (base: string, id: string) => `${base}/export/jobs/${id}`;

/** Kick-off: validate, freeze the caller's access, take the cut, queue the job, answer 202. */
export function kickoffHandler(deps: ExportDeps, level: ExportLevel) {
  return async (req: FhirRequest, params: Record<string, string>, ctx: RouterContext): Promise<FhirResponse> => {
    const { strict } = checkKickoffHeaders(req.headers);
    const { request, issues } = parseKickoff(level, kickoffPairs(req.method, req.query, req.body), strict);
    const access = jobAccess(req.access);
    if (request.types && access.allowedTypes) {
      const denied = request.types.filter((t) => !access.allowedTypes!.includes(t));
      for (const t of denied) {
        issues.push({ severity: 'warning', code: 'forbidden', diagnostics: `_type ${t} is not allowed by the access token's scopes; not exported`, expression: ['_type'] });
      }
    }
    if (level === 'group') {
      const groupId = params.id;
      req.access.assertType('Group', 'read');
      const group = await ctx.repo.readResource<Group>('Group', groupId).catch((err: unknown) => {
        if (err instanceof FhirError && (err.status === 404 || err.status === 410)) throw notFound(`Group/${groupId} does not exist`);
        throw err;
      });
      req.access.assertResource(group, 'read');
      const members = memberPatients(group);
      // `patient` narrows a Group export to those members (Bulk Data IG v2.0).
      request.patients = request.patients ? request.patients.filter((p) => members.includes(p)) : members;
      request.groupId = groupId;
    }
    for (const [type, alternatives] of Object.entries(request.typeFilters)) {
      // Fail fast on a query the search engine cannot run (unknown parameter, bad value), before queueing.
      for (const q of alternatives) await searchIds(ctx.repo.db, type, q, 1);
    }
    const query = new URLSearchParams(req.query).toString();
    const requestUrl = `${deps.fhirBaseUrl()}/${req.path}${query ? `?${query}` : ''}`;
    const created = await deps.jobs.createLimited(
      { owner: req.access.actor, requestUrl, request: { ...request, access }, issues },
      { perOwner: deps.settings.maxJobsPerClient, total: deps.settings.maxJobs },
    );
    if ('refused' in created) {
      throw new FhirError(429, outcome('error', 'throttled', `Too many concurrent exports: ${created.refused}; retry later`), {
        'Retry-After': String(deps.settings.retryAfterSeconds * 5),
      });
    }
    const id = created.id;
    deps.wake();
    return {
      status: 202,
      headers: { 'Content-Location': statusUrl(deps.baseUrl(), id) },
      resource: outcome('information', 'informational', `Export ${id} accepted; poll the Content-Location URL for its status`),
    };
  };
}

function jobAccess(policy: AccessPolicy): JobAccess {
  const s = policy.searchAccess();
  const allowed = s?.allowedTypes;
  return {
    allowedTypes: allowed && allowed !== '*' ? [...allowed].sort() : undefined,
    patientCompartments: s?.patientCompartments,
    typeCriteria: s?.typeCriteria,
  };
}

function memberPatients(group: Group): string[] {
  const out = new Set<string>();
  for (const m of group.member ?? []) {
    if (m.inactive) continue;
    const ref = m.entity?.reference ?? '';
    const match = /^(?:.*\/)?Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
    if (match) out.add(`Patient/${match[1]}`);
  }
  return [...out];
}

type Authenticate = (req: Request) => Promise<AccessPolicy>;

/**
 * Status, manifest, cancel and download. Not FHIR interactions, so plain express routes; each one
 * authenticates and only the client that started a job sees it.
 */
export function exportHttpRoutes(deps: ExportDeps, authenticate: Authenticate): express.Router {
  const r = express.Router();
  const wrap = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) => {
    fn(req, res).catch(next);
  };
  /** The job, if it exists and belongs to the caller; 404 otherwise, so other clients cannot probe job ids. */
  const ownJob = async (req: Request): Promise<{ job: ExportJob; access: AccessPolicy }> => {
    const access = await authenticate(req);
    const job = await deps.jobs.get(String(req.params.id));
    if (!job || job.owner !== access.actor || job.status === 'cancelled') throw notFound(`Export job ${req.params.id} does not exist (or was cancelled or expired)`);
    return { job, access };
  };

  r.get(
    '/export/jobs/:id',
    wrap(async (req, res) => {
      const { job } = await ownJob(req);
      res.setHeader('Cache-Control', 'no-store');
      if (job.status === 'accepted' || job.status === 'in-progress') {
        res.setHeader('Retry-After', String(deps.settings.retryAfterSeconds));
        res.setHeader('X-Progress', job.status === 'accepted' ? 'queued' : (job.progress ?? 'in progress'));
        res.status(202).end();
        return;
      }
      if (job.status === 'failed') {
        res.status(job.errorStatus ?? 500).type('application/fhir+json').send(JSON.stringify(job.error ?? outcome('error', 'exception', 'The export failed')));
        return;
      }
      const files = await deps.jobs.files(job.id);
      const url = (name: string) => `${statusUrl(deps.baseUrl(), job.id)}/files/${encodeURIComponent(name)}`;
      if (job.expiresAt) res.setHeader('Expires', new Date(job.expiresAt).toUTCString());
      res.status(200).json({
        transactionTime: job.transactionTime,
        request: job.requestUrl,
        requiresAccessToken: true,
        output: files.filter((f) => f.kind === 'output').map((f) => ({ type: f.resourceType, url: url(f.name), count: f.count })),
        deleted: files.filter((f) => f.kind === 'deleted').map((f) => ({ type: 'Bundle', url: url(f.name), count: f.count })),
        error: files.filter((f) => f.kind === 'error').map((f) => ({ type: 'OperationOutcome', url: url(f.name), count: f.count })),
      });
    }),
  );

  r.delete(
    '/export/jobs/:id',
    wrap(async (req, res) => {
      const access = await authenticate(req);
      const id = String(req.params.id);
      const job = await deps.jobs.get(id);
      const prior = job && job.owner === access.actor ? await deps.jobs.cancel(id, access.actor) : undefined;
      if (!prior) throw notFound(`Export job ${id} does not exist (or was already cancelled or expired)`);
      // A job no worker is running is gone now; a running one is stopped and removed by its worker.
      if (prior !== 'in-progress') await deps.blobs.deletePrefix(`export/${id}/`);
      res.status(202).type('application/fhir+json').send(JSON.stringify(outcome('information', 'informational', `Export ${id} cancelled`)));
    }),
  );

  r.get(
    '/export/jobs/:id/files/:name',
    wrap(async (req, res) => {
      const access = await authenticate(req);
      const job = await deps.jobs.get(String(req.params.id));
      if (!job || job.status !== 'completed') throw notFound(`Export job ${req.params.id} has no files (unknown, unfinished, cancelled or expired)`);
      if (job.owner !== access.actor) throw forbidden('Only the client that started this export may download its files');
      const file = await deps.jobs.file(job.id, String(req.params.name));
      if (!file) throw notFound(`Export job ${job.id} has no file "${req.params.name}"`);
      const body = await deps.blobs.get(file.blobKey);
      res.status(200).type('application/fhir+ndjson').setHeader('Content-Length', String(file.size));
      body.on('error', (err) => res.destroy(err));
      body.pipe(res);
    }),
  );
  return r;
}
