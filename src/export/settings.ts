/** Operator knobs of bulk export, read from the environment (documented in docs/export.md). */
import { envReader, type Environment } from '../env.js';

export interface ExportSettings {
  /** Resources per ndjson file before a new part starts (EXPORT_FILE_MAX_RESOURCES). */
  maxResourcesPerFile: number;
  /** Rows fetched from the database cursor at a time (EXPORT_BATCH_SIZE). */
  batchSize: number;
  /** Unfinished jobs (accepted or in progress) one client may have before kick-off answers 429 (EXPORT_MAX_JOBS_PER_CLIENT). */
  maxJobsPerClient: number;
  /** Unfinished jobs across all clients before kick-off answers 429 (EXPORT_MAX_JOBS). */
  maxJobs: number;
  /** Jobs one server process runs at once (EXPORT_WORKERS). */
  workers: number;
  /** How long a claimed job stays owned without a heartbeat; a crashed worker's job is re-run after it (EXPORT_LEASE_MS). */
  leaseMs: number;
  /** Idle poll interval of the worker (EXPORT_POLL_MS). */
  pollMs: number;
  /** Completed jobs and their files are deleted this long after completion (EXPORT_TTL_SECONDS). */
  ttlSeconds: number;
  /** Retry-After on the status URL while a job runs, and on 429 (EXPORT_RETRY_AFTER_SECONDS). */
  retryAfterSeconds: number;
  /** A job that was claimed this many times without finishing fails instead of running again (EXPORT_MAX_ATTEMPTS). */
  maxAttempts: number;
  /** Pause after each written file, to spare a busy production database (EXPORT_THROTTLE_MS, default 0). */
  throttleMs: number;
  /** Most ids a _typeFilter may match per type (EXPORT_TYPEFILTER_MAX_IDS); more is reported as an error. */
  typeFilterMaxIds: number;
}

export function exportSettings(env: Environment): ExportSettings {
  const { int } = envReader(env);
  return {
    maxResourcesPerFile: int('EXPORT_FILE_MAX_RESOURCES', 100_000, 1),
    batchSize: int('EXPORT_BATCH_SIZE', 2000, 1),
    maxJobsPerClient: int('EXPORT_MAX_JOBS_PER_CLIENT', 3, 1),
    maxJobs: int('EXPORT_MAX_JOBS', 20, 1),
    workers: int('EXPORT_WORKERS', 1, 0),
    leaseMs: int('EXPORT_LEASE_MS', 30_000, 100),
    pollMs: int('EXPORT_POLL_MS', 1000, 10),
    ttlSeconds: int('EXPORT_TTL_SECONDS', 24 * 3600, 1),
    retryAfterSeconds: int('EXPORT_RETRY_AFTER_SECONDS', 2, 1),
    maxAttempts: int('EXPORT_MAX_ATTEMPTS', 5, 1),
    throttleMs: int('EXPORT_THROTTLE_MS', 0),
    typeFilterMaxIds: int('EXPORT_TYPEFILTER_MAX_IDS', 1_000_000, 1),
  };
}
