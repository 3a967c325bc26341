/**
 * Bulk Data Access IG v2.0 `$export` (system, Patient and Group level) for backend services.
 * Kick-off runs through the FHIR router; status, cancel and downloads are plain routes under /export/jobs;
 * a background worker (one per server process, started by `startServer`) writes ndjson files through the
 * blob store. See docs/export.md.
 */
import { makeLogger } from '../facade.js';
import type { HttpMethod } from '../fhir/router.js';
import type { BlobStore } from '../blob/index.js';
import type { Runtime } from '../runtime.js';
import { JobStore } from './jobs.js';
import { type ExportDeps, exportHttpRoutes, kickoffHandler } from './routes.js';
import type { ExportSettings } from './settings.js';
import { ExportWorker } from './worker.js';

export { ExportWorker } from './worker.js';
export { JobStore } from './jobs.js';
export type { ExportSettings } from './settings.js';

export interface BulkExport {
  jobs: JobStore;
  blobs: BlobStore;
  settings: ExportSettings;
  worker: ExportWorker;
}

const installed = new WeakMap<Runtime, BulkExport>();

const OPERATION = 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition';

/** Registers the kick-off operations and the status/download routes; the worker starts with `startExportWorker`. */
export function installBulkExport(rt: Runtime, opts: { blobs?: BlobStore } = {}): BulkExport {
  const settings = rt.config.export;
  const blobs = opts.blobs ?? rt.blobs;
  const jobs = new JobStore(rt.db);
  const worker = new ExportWorker(rt.db, jobs, blobs, settings, makeLogger('export'), rt.router.ctx.reads);
  const deps: ExportDeps = {
    jobs,
    blobs,
    settings,
    baseUrl: () => rt.config.baseUrl,
    fhirBaseUrl: () => rt.config.fhirBaseUrl,
    wake: () => worker.wake(),
  };
  const methods: HttpMethod[] = ['GET', 'POST'];
  for (const m of methods) {
    rt.router.add(m, '$export', kickoffHandler(deps, 'system'));
    rt.router.add(m, 'Patient/$export', kickoffHandler(deps, 'patient'));
    rt.router.add(m, 'Group/:id/$export', kickoffHandler(deps, 'group'));
  }
  rt.router.operations.push(
    { name: 'export', definition: `${OPERATION}/export`, level: 'system' },
    { name: 'export', definition: `${OPERATION}/patient-export`, level: 'type', types: ['Patient'] },
    { name: 'export', definition: `${OPERATION}/group-export`, level: 'instance', types: ['Group'] },
  );
  rt.publicRoutes.use(exportHttpRoutes(deps, (req) => rt.authenticate(req)));
  rt.onClose.push(() => worker.stop());
  const bulk = { jobs, blobs, settings, worker };
  installed.set(rt, bulk);
  return bulk;
}

/** Starts this process's export worker (server processes only; CLI commands never run exports). */
export function startExportWorker(rt: Runtime): void {
  installed.get(rt)?.worker.start();
}

export function bulkExportOf(rt: Runtime): BulkExport | undefined {
  return installed.get(rt);
}
