/**
 * The configuration layer: the one place that reads the environment. The CLI hands its environment to `loadConfig`
 * once at start; every setting, the core's and each plug-in's (src/plugins.ts), is parsed and checked here, so a
 * wrong value stops the start with a message naming its variable, and nothing below reads the environment again.
 */
import os from 'node:os';
import path from 'node:path';
import type { BlobStoreKind, S3Settings } from './blob/index.js';
import { exportSettings, type ExportSettings } from './export/settings.js';
import { loadPluginConfigs, type PluginConfigs } from './plugins.js';
import { ConfigError, envReader, type Environment } from './env.js';

export { ConfigError, envReader, type Environment };

/** Everything the server reads from its environment, parsed once and typed. */
export interface Config {
  port: number;
  /** Interface every listener binds to. Loopback by default when AUTH=off, so an open server stays local. */
  host: string;
  databaseUrl?: string;
  /** A streaming replica of DATABASE_URL for searches and history (DATABASE_READ_URL), and how long a caller that
   * has just written waits for it to catch up before reading from the primary instead. */
  databaseReadUrl?: string;
  databaseReadMaxWaitMs: number;
  /** Connections per process in the PostgreSQL pool. */
  databasePoolSize: number;
  dataDir: string;
  /** Where blobs (DICOM instances, export files) live: files under DATA_DIR, or the database (shared by every node). */
  blobStore: BlobStoreKind;
  /** The bucket for BLOB_STORE=s3 (and for `blobs copy` to or from it), when S3_BUCKET is set. */
  s3?: S3Settings;
  baseUrl: string;
  /** True when BASE_URL names the public URL; otherwise an ephemeral PORT=0 rewrites baseUrl once it is bound. */
  baseUrlFixed: boolean;
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
  /** Bulk $export (EXPORT_*, docs/export.md). */
  export: ExportSettings;
  /** MESSAGE_LOG_RETENTION_DAYS: finished messages older than this are pruned hourly; undefined keeps them. */
  messageLogRetentionDays?: number;
  /** Each installed plug-in's own settings, parsed by the plug-in's config module. */
  plugins: PluginConfigs;
}

/** MESSAGE_LOG_RETENTION_DAYS in days; undefined keeps every message. */
export function retentionDays(env: Environment): number | undefined {
  const raw = env.MESSAGE_LOG_RETENTION_DAYS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError('MESSAGE_LOG_RETENTION_DAYS', `MESSAGE_LOG_RETENTION_DAYS must be a positive number of days, got "${raw}"`);
  return n;
}

/** The core's settings alone (no plug-in is loaded): what the supervisor and every command need. */
export function loadCoreConfig(env: Environment, argv: string[] = []): Omit<Config, 'plugins'> {
  const read = envReader(env);
  const port = read.port('PORT', 8080);
  const baseUrl = (env.BASE_URL ?? `http://localhost:${port}`).replace(/\/+$/, '');
  const open = argv.includes('--open') || ['off', 'false', '0'].includes((env.AUTH ?? '').toLowerCase());
  const authEnabled = !open;
  const databaseUrl = env.DATABASE_URL || undefined;
  const workers = read.int('WORKERS', databaseUrl ? os.availableParallelism() : 1);
  if (workers < 1) throw new ConfigError('WORKERS', `WORKERS must be at least 1, got "${env.WORKERS}"`);
  if (workers > 1 && !databaseUrl) {
    throw new ConfigError('WORKERS', `WORKERS=${workers} needs PostgreSQL (DATABASE_URL): the embedded database (PGlite) belongs to one process; unset WORKERS or set DATABASE_URL`);
  }
  const databaseReadUrl = env.DATABASE_READ_URL || undefined;
  if (databaseReadUrl && !databaseUrl) throw new ConfigError('DATABASE_READ_URL', 'DATABASE_READ_URL is a replica of DATABASE_URL: set DATABASE_URL too');
  return {
    port,
    host: env.HOST || (authEnabled ? '0.0.0.0' : '127.0.0.1'),
    databaseUrl,
    databaseReadUrl,
    databaseReadMaxWaitMs: read.int('DATABASE_READ_MAX_WAIT_MS', 1000),
    databasePoolSize: read.int('DATABASE_POOL_SIZE', 20, 1),
    dataDir: path.resolve(env.DATA_DIR ?? './data'),
    blobStore: read.oneOf('BLOB_STORE', ['fs', 'postgres', 's3'] as const, 'fs'),
    s3: s3Settings(env),
    baseUrl,
    baseUrlFixed: !!env.BASE_URL,
    fhirBaseUrl: `${baseUrl}/fhir`,
    authEnabled,
    maxBodyBytes: read.int('MAX_BODY_BYTES', 16 * 1024 * 1024),
    defaultPageSize: read.int('DEFAULT_PAGE_SIZE', 20),
    maxPageSize: read.int('MAX_PAGE_SIZE', 1000),
    workers,
    export: exportSettings(env),
    messageLogRetentionDays: retentionDays(env),
  };
}

function s3Settings(env: Environment): S3Settings | undefined {
  const read = envReader(env);
  const bucket = read.raw('S3_BUCKET');
  if (!bucket) {
    if (env.BLOB_STORE === 's3') throw new ConfigError('S3_BUCKET', 'BLOB_STORE=s3 needs S3_BUCKET (and S3_ENDPOINT for a store that is not AWS)');
    return undefined;
  }
  const accessKeyId = read.raw('S3_ACCESS_KEY_ID');
  const secretAccessKey = read.raw('S3_SECRET_ACCESS_KEY');
  if (!accessKeyId !== !secretAccessKey) throw new ConfigError(accessKeyId ? 'S3_SECRET_ACCESS_KEY' : 'S3_ACCESS_KEY_ID', 'S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together (or neither: the AWS credential chain)');
  const endpoint = read.raw('S3_ENDPOINT');
  return {
    bucket,
    prefix: read.raw('S3_PREFIX') ?? '',
    region: read.raw('S3_REGION') ?? 'us-east-1',
    endpoint,
    forcePathStyle: read.bool('S3_FORCE_PATH_STYLE', !!endpoint),
    credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
  };
}

/** The whole configuration: the core's and every installed plug-in's, each setting checked. */
export async function loadConfig(env: Environment, argv: string[] = []): Promise<Config> {
  const core = loadCoreConfig(env, argv);
  return { ...core, plugins: await loadPluginConfigs(env) };
}
