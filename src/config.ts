import os from 'node:os';
import path from 'node:path';

/** Everything the server reads from its environment, parsed once and typed. */
export interface Config {
  port: number;
  /** Interface every listener binds to. Loopback by default when AUTH=off, so an open server stays local. */
  host: string;
  mllpPort: number;
  dicomPort: number;
  databaseUrl?: string;
  dataDir: string;
  baseUrl: string;
  /** FHIR base URL, `${baseUrl}/fhir`. */
  fhirBaseUrl: string;
  /** false only when started with AUTH=off / --open. */
  authEnabled: boolean;
  /** Maximum accepted request body, bytes. */
  maxBodyBytes: number;
  /** Page size when _count is absent, and the largest _count honoured. */
  defaultPageSize: number;
  maxPageSize: number;
  /**
   * Server processes `serve` runs under one supervisor (src/supervisor.ts), sharing the listeners. PGlite belongs to
   * one process, so it is 1 there; on PostgreSQL the default is one per core.
   */
  workers: number;
  /** Raw environment, for modules (facades, smart) that read their own settings. */
  env: NodeJS.ProcessEnv;
}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, argv: string[] = []): Config {
  const port = intFrom(env, 'PORT', 8080);
  const baseUrl = (env.BASE_URL ?? `http://localhost:${port}`).replace(/\/+$/, '');
  const open = argv.includes('--open') || ['off', 'false', '0'].includes((env.AUTH ?? '').toLowerCase());
  const authEnabled = !open;
  const databaseUrl = env.DATABASE_URL || undefined;
  const workers = intFrom(env, 'WORKERS', databaseUrl ? os.availableParallelism() : 1);
  if (workers < 1) throw new Error(`WORKERS must be at least 1, got "${env.WORKERS}"`);
  if (workers > 1 && !databaseUrl) {
    throw new Error(`WORKERS=${workers} needs PostgreSQL (DATABASE_URL): the embedded database (PGlite) belongs to one process; unset WORKERS or set DATABASE_URL`);
  }
  return {
    port,
    host: env.HOST || (authEnabled ? '0.0.0.0' : '127.0.0.1'),
    mllpPort: intFrom(env, 'MLLP_PORT', 2575),
    dicomPort: intFrom(env, 'DICOM_PORT', 11112),
    databaseUrl,
    dataDir: path.resolve(env.DATA_DIR ?? './data'),
    baseUrl,
    fhirBaseUrl: `${baseUrl}/fhir`,
    authEnabled,
    maxBodyBytes: intFrom(env, 'MAX_BODY_BYTES', 16 * 1024 * 1024),
    defaultPageSize: intFrom(env, 'DEFAULT_PAGE_SIZE', 20),
    maxPageSize: intFrom(env, 'MAX_PAGE_SIZE', 1000),
    workers,
    env,
  };
}
