import cluster from 'node:cluster';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { CapabilityStatementRestSecurity } from '@medplum/fhirtypes';
import type { Config } from './config.js';
import type { Database } from './db/database.js';
import { type BlobStore, type BlobStoreKind, copyBlobs, DatabaseBlobStore, openBlobStore } from './blob/index.js';
import { ConfluxError } from './errors.js';
import { migrate } from './db/migrate.js';
import { openDatabase } from './db/open.js';
import { ReadRouting } from './db/read-replica.js';
import { type AccessPolicy, systemAccess } from './fhir/access.js';
import { installBundleProcessor } from './fhir/bundle.js';
import { installValidateOperation } from './fhir/validate-operation.js';
import { installBulkExport } from './export/index.js';
import { buildCapabilityStatement } from './fhir/capability.js';
import { FhirError } from './fhir/outcome.js';
import { Repository } from './fhir/repository.js';
import { FhirRouter } from './fhir/router.js';
import { systemWriter, type SystemWriter } from './fhir/write.js';
import { reindex } from './fhir/search/reindex.js';
import { loadFhirDefinitions } from './fhir/definitions.js';
import { fhirErrorHandler, fhirExpressRouter } from './http/fhir-express.js';
import { buildOpenApi, docsPage } from './http/openapi.js';

// From the package root: compiled, this module runs from dist/src/, one folder deeper than src/.
const PACKAGE_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../' : '../../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', PACKAGE_ROOT), 'utf8')) as { version: string };
export const VERSION = pkg.version;

/**
 * Everything a running Conflux holds, and the hooks plug-ins (smart/, facades/) use to join in.
 * Built by `createRuntime`; the CLI's `serve` adds listeners, other CLI commands use it in-process.
 */
export interface Runtime {
  config: Config;
  db: Database;
  repo: Repository;
  router: FhirRouter;
  /** The one way in for system writes (facades, device filing, audit): typed results, no Location parsing. */
  write: SystemWriter;
  app: express.Express;
  /** Mounted at /admin, behind the admin guard. Facades add their operator routes here. */
  admin: express.Router;
  /** Mounted at the root before /fhir: smart/ adds /auth/*, discovery and friends here. */
  publicRoutes: express.Router;
  /** Under the supervisor, this worker's slot (0 … WORKERS-1, kept across restarts); undefined when it runs alone. */
  workerSlot?: number;
  /** Loopback admin token (CLI → running server); also accepted by `adminGuard`. */
  adminToken: string;
  /** Turns an HTTP request into an access policy. smart/ replaces it; the default refuses when auth is on. */
  authenticate: (req: Request) => Promise<AccessPolicy>;
  /** May the caller use the admin API? smart/ may widen it (e.g. admin-scoped tokens). */
  authorizeAdmin: (req: Request) => Promise<boolean>;
  /** CapabilityStatement.rest.security, set by smart/. */
  capabilitySecurity?: CapabilityStatementRestSecurity;
  /** DICOM instances and export files (BLOB_STORE: files under DATA_DIR, or the database every node shares). */
  blobs: BlobStore;
  /** Run at shutdown, in reverse order of registration. */
  onClose: Array<() => Promise<void>>;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Use this database instead of opening one from config (tests). */
  db?: Database;
}

export async function createRuntime(config: Config, opts: RuntimeOptions = {}): Promise<Runtime> {
  loadFhirDefinitions();
  const db = opts.db ?? (await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.databasePoolSize }));
  await migrate(db);
  const repo = new Repository(db);
  const reads = config.databaseReadUrl
    ? new ReadRouting(db, await openDatabase({ databaseUrl: config.databaseReadUrl, dataDir: null, poolSize: config.databasePoolSize }), config.databaseReadMaxWaitMs)
    : undefined;
  const router = new FhirRouter({
    repo,
    reads,
    baseUrl: config.fhirBaseUrl,
    defaultPageSize: config.defaultPageSize,
    maxPageSize: config.maxPageSize,
  });
  installBundleProcessor(router);
  installValidateOperation(router);

  const app = express();
  app.disable('x-powered-by');
  // ETags are FHIR versions (W/"3"), set by the FHIR layer; Express's body hashes would contradict them.
  app.set('etag', false);
  app.set('trust proxy', 'loopback');
  const admin = express.Router();
  const publicRoutes = express.Router();

  const rt: Runtime = {
    config,
    db,
    repo,
    router,
    write: systemWriter(router),
    blobs: openBlobStore({ kind: config.blobStore, dataDir: config.dataDir, db, s3: config.s3 }),
    app,
    admin,
    publicRoutes,
    adminToken: randomBytes(32).toString('base64url'),
    authenticate: async () => {
      if (!config.authEnabled) return systemAccess('anonymous (AUTH=off)');
      throw new FhirError(
        401,
        {
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'login', diagnostics: 'A SMART access token is required (Authorization: Bearer ...)' }],
        },
        { 'WWW-Authenticate': 'Bearer realm="conflux"' },
      );
    },
    authorizeAdmin: async () => false,
    onClose: [],
    async close() {
      for (const fn of [...rt.onClose].reverse()) await fn().catch((err) => console.error(`[close] ${(err as Error).message}`));
      await reads?.replica.close();
      rt.blobs.close?.();
      if (!opts.db) await db.close();
    },
  };
  if (rt.blobs instanceof DatabaseBlobStore) {
    // Chunks of uploads a node did not live to publish; failing to sweep costs only space, so it is logged, not fatal.
    rt.blobs.sweep().catch((err: Error) => console.error(`[blobs] sweeping unpublished chunks failed: ${err.message}`));
  }
  // Bulk $export needs the runtime (authenticate, publicRoutes, onClose), so it joins once rt exists.
  installBulkExport(rt);

  router.add('GET', 'metadata', async () => ({
    status: 200,
    resource: buildCapabilityStatement(router, { baseUrl: config.fhirBaseUrl, version: VERSION, security: rt.capabilitySecurity }),
  }));

  const startedAt = new Date();
  admin.get('/status', (_req, res) => {
    res.json({ version: VERSION, database: db.kind, startedAt: startedAt.toISOString(), pid: process.pid, auth: config.authEnabled ? 'smart' : 'off' });
  });
  admin.post('/reindex', async (req, res, next) => {
    try {
      const type = typeof req.body?.type === 'string' && req.body.type ? req.body.type : undefined;
      res.json(await reindex(db, { type }));
    } catch (err) {
      next(err);
    }
  });
  admin.post('/blobs/copy', async (req, res, next) => {
    try {
      const kinds = ['fs', 'postgres', 's3'] as const;
      const [from, to] = [req.body?.from, req.body?.to] as string[];
      if (!kinds.includes(from as BlobStoreKind) || !kinds.includes(to as BlobStoreKind) || from === to) {
        throw new ConfluxError('usage', `blobs copy needs --from and --to, two different stores of ${kinds.join(', ')} (got "${from ?? ''}" and "${to ?? ''}")`);
      }
      const stores = [from, to].map((kind) => openBlobStore({ kind: kind as BlobStoreKind, dataDir: config.dataDir, db, s3: config.s3 }));
      try {
        res.json(await copyBlobs(stores[0]!, stores[1]!, typeof req.body?.prefix === 'string' ? req.body.prefix : ''));
      } finally {
        for (const s of stores) s.close?.();
      }
    } catch (err) {
      next(err);
    }
  });
  app.get('/healthz', async (_req, res) => {
    try {
      await db.query('SELECT 1');
      // pid and, under the supervisor, the cluster worker id: which process answered (operators, tests).
      res.json({ status: 'ok', database: db.kind, version: VERSION, pid: process.pid, ...(cluster.worker ? { worker: cluster.worker.id } : {}) });
    } catch (err) {
      res.status(503).json({ status: 'unavailable', database: db.kind, error: (err as Error).message });
    }
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(buildOpenApi(VERSION, config.baseUrl));
  });
  app.get('/docs', (_req, res) => {
    res.type('html').send(docsPage(VERSION, config.baseUrl));
  });
  app.use((req, res, next) => publicRoutes(req, res, next));
  app.use('/fhir', fhirExpressRouter(router, (req) => rt.authenticate(req), config.maxBodyBytes));
  app.use('/admin', express.json({ limit: config.maxBodyBytes }), adminGuard(rt), admin);
  app.use(fhirErrorHandler);
  return rt;
}

/** The admin API needs the loopback admin token (written into DATA_DIR at start), or what smart/ accepts. */
function adminGuard(rt: Runtime) {
  const expected = () => Buffer.from(rt.adminToken);
  return async (req: Request, _res: Response, next: NextFunction) => {
    try {
      if (!rt.config.authEnabled) return next();
      const header = req.headers.authorization ?? '';
      const token = Buffer.from(header.replace(/^Bearer\s+/i, ''));
      if (token.length === expected().length && timingSafeEqual(token, expected())) return next();
      if (await rt.authorizeAdmin(req)) return next();
      next(
        new FhirError(
          401,
          {
            resourceType: 'OperationOutcome',
            issue: [{ severity: 'error', code: 'login', diagnostics: 'The admin API needs the local admin token or an admin SMART token' }],
          },
          { 'WWW-Authenticate': 'Bearer realm="conflux-admin"' },
        ),
      );
    } catch (err) {
      next(err);
    }
  };
}
