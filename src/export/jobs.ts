import { randomUUID } from 'node:crypto';
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import type { Database, Queryable } from '../db/database.js';
import type { ExportRequest } from './params.js';

export type JobStatus = 'accepted' | 'in-progress' | 'completed' | 'failed' | 'cancelled';

export interface ExportJob {
  id: string;
  owner: string;
  status: JobStatus;
  requestUrl: string;
  request: ExportRequest & { access: JobAccess };
  transactionTime: string;
  cutSeq: number;
  cutXids: string[];
  issues: OperationOutcomeIssue[];
  doneTypes: string[];
  exported: number;
  progress?: string;
  errorStatus?: number;
  error?: OperationOutcome;
  worker?: string;
  attempts: number;
  expiresAt?: string;
}

/** What the starting client's token allowed, frozen at kick-off (the worker runs without a token). */
export interface JobAccess {
  /** undefined → every type. */
  allowedTypes?: string[];
  /** undefined → every compartment (a system token); else only resources in these Patient compartments. */
  patientCompartments?: string[];
  /** Granular scopes (`system/Observation.rs?category=...`): per type, alternatives of search criteria. */
  typeCriteria?: Record<string, Array<Array<[string, string]>>>;
}

export interface ExportFile {
  name: string;
  kind: 'output' | 'error' | 'deleted';
  resourceType: string;
  part: number;
  count: number;
  size: number;
  blobKey: string;
}

interface JobRow {
  id: string;
  owner: string;
  status: JobStatus;
  request_url: string;
  request: unknown;
  transaction_time: Date | string;
  cut_seq: number | string;
  cut_xids: string[];
  issues: unknown;
  done_types: string[];
  exported: number | string;
  progress: string | null;
  error_status: number | null;
  error: unknown;
  worker: string | null;
  attempts: number;
  expires_at: Date | string | null;
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));
const iso = (v: Date | string) => (v instanceof Date ? v : new Date(v)).toISOString();

function toJob(r: JobRow): ExportJob {
  return {
    id: r.id,
    owner: r.owner,
    status: r.status,
    requestUrl: r.request_url,
    request: json(r.request),
    transactionTime: iso(r.transaction_time),
    cutSeq: Number(r.cut_seq),
    cutXids: r.cut_xids ?? [],
    issues: json(r.issues) ?? [],
    doneTypes: r.done_types ?? [],
    exported: Number(r.exported),
    progress: r.progress ?? undefined,
    errorStatus: r.error_status ?? undefined,
    error: r.error ? json(r.error) : undefined,
    worker: r.worker ?? undefined,
    attempts: r.attempts,
    expiresAt: r.expires_at ? iso(r.expires_at) : undefined,
  };
}

interface NewJob {
  owner: string;
  requestUrl: string;
  request: ExportJob['request'];
  issues: OperationOutcomeIssue[];
  cut: { cutSeq: number; cutXids: string[]; transactionTime: string };
}

const UNFINISHED = `status IN ('accepted', 'in-progress')`;

/** All SQL on export_job / export_file. Times come from the database clock so several processes agree. */
export class JobStore {
  constructor(readonly db: Database) {}

  /**
   * The consistent cut for a new job: the last allocated history seq, then the transactions writing
   * resource_history right now. A transaction holds its RowExclusiveLock on resource_history from before it
   * draws a seq until it commits, so every version with seq <= cut is either visible already or written by one
   * of those transactions; once they have ended the set of versions with seq <= cut is final. Unrelated long
   * transactions (an index build, another schema) do not hold an export up.
   */
  async cut(q: Queryable = this.db): Promise<{ cutSeq: number; cutXids: string[]; transactionTime: string }> {
    const s = await q.query<{ last_value: number | string; is_called: boolean }>(
      `SELECT last_value, is_called FROM resource_history_seq_seq`,
    );
    const seq = s.rows[0].is_called ? Number(s.rows[0].last_value) : 0;
    const t = await q.query<{ xids: string[] | null; now: Date | string }>(
      `SELECT (SELECT array_agg(DISTINCT x.transactionid::text)
                 FROM pg_locks r
                 JOIN pg_locks x ON x.pid = r.pid AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
                WHERE r.locktype = 'relation' AND r.relation = 'resource_history'::regclass
                  AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND r.mode = 'RowExclusiveLock' AND r.pid <> pg_backend_pid()) AS xids,
              clock_timestamp() AS now`,
    );
    return { cutSeq: seq, cutXids: t.rows[0].xids ?? [], transactionTime: iso(t.rows[0].now) };
  }

  /** Resolves once every transaction recorded at the cut has committed or aborted. */
  async waitForCut(xids: string[], signal?: AbortSignal): Promise<void> {
    if (!xids.length) return;
    for (;;) {
      const r = await this.db.query<{ running: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND transactionid::text = ANY($1::text[])) AS running`,
        [xids],
      );
      if (!r.rows[0].running) return;
      signal?.throwIfAborted();
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /**
   * Queues a job unless its owner or the server already has too many unfinished ones. Count and insert run
   * under one advisory lock, so simultaneous kick-offs cannot overshoot the limits.
   */
  async createLimited(
    job: Omit<NewJob, 'cut'>,
    limits: { perOwner: number; total: number },
  ): Promise<{ id: string } | { refused: string }> {
    return this.db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(7411060)');
      const r = await tx.query<{ mine: number | string; total: number | string }>(
        `SELECT count(*) FILTER (WHERE owner = $1) AS mine, count(*) AS total FROM export_job WHERE ${UNFINISHED}`,
        [job.owner],
      );
      const mine = Number(r.rows[0].mine);
      const total = Number(r.rows[0].total);
      if (mine >= limits.perOwner) return { refused: `this client already has ${mine} unfinished export(s)` };
      if (total >= limits.total) return { refused: `the server already has ${total} unfinished export(s)` };
      const cut = await this.cut(tx);
      return { id: await this.create({ ...job, cut }, tx) };
    });
  }

  async create(job: NewJob, q: Queryable = this.db): Promise<string> {
    const id = randomUUID();
    await q.query(
      `INSERT INTO export_job (id, owner, status, request_url, request, transaction_time, cut_seq, cut_xids, issues)
       VALUES ($1, $2, 'accepted', $3, $4, $5, $6, $7, $8)`,
      [id, job.owner, job.requestUrl, JSON.stringify(job.request), job.cut.transactionTime, job.cut.cutSeq, job.cut.cutXids, JSON.stringify(job.issues)],
    );
    return id;
  }

  async get(id: string): Promise<ExportJob | undefined> {
    const r = await this.db.query<JobRow>(`SELECT * FROM export_job WHERE id = $1`, [id]);
    return r.rows[0] ? toJob(r.rows[0]) : undefined;
  }

  /**
   * Claims the oldest runnable job: accepted, or in progress with an expired lease (its worker died).
   * SKIP LOCKED lets concurrent claimers pass over a row another one is claiming, so no job is claimed twice.
   */
  async claim(worker: string, leaseMs: number): Promise<ExportJob | undefined> {
    const r = await this.db.query<JobRow>(
      `WITH c AS (
         SELECT id FROM export_job
         WHERE status = 'accepted' OR (status = 'in-progress' AND lease_until < now())
         ORDER BY created_at
         LIMIT 1
         FOR UPDATE SKIP LOCKED
       )
       UPDATE export_job j
       SET status = 'in-progress', worker = $1, lease_until = now() + $2 * interval '1 millisecond',
           attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
       FROM c WHERE j.id = c.id
       RETURNING j.*`,
      [worker, leaseMs],
    );
    return r.rows[0] ? toJob(r.rows[0]) : undefined;
  }

  /** Renews the lease and records progress; false when the job was cancelled or taken over. */
  async heartbeat(id: string, worker: string, leaseMs: number, progress: string, exported: number): Promise<boolean> {
    const r = await this.db.query(
      `UPDATE export_job SET lease_until = now() + $3 * interval '1 millisecond', progress = $4, exported = $5
       WHERE id = $1 AND worker = $2 AND status = 'in-progress'`,
      [id, worker, leaseMs, progress, exported],
    );
    return r.rowCount === 1;
  }

  /** Files of types not finished yet (left by an earlier attempt): forgotten here, their blobs deleted by the caller. */
  async dropUnfinishedFiles(id: string, doneTypes: string[]): Promise<ExportFile[]> {
    const r = await this.db.query<FileRow>(
      `DELETE FROM export_file WHERE job_id = $1 AND kind IN ('output', 'deleted') AND NOT (resource_type = ANY($2::text[])) RETURNING *`,
      [id, doneTypes],
    );
    return r.rows.map(toFile);
  }

  /** Records a finished file, only while `worker` still owns the job. */
  async addFile(id: string, worker: string, f: ExportFile): Promise<boolean> {
    const r = await this.db.query(
      `INSERT INTO export_file (job_id, name, kind, resource_type, part, count, size, blob_key)
       SELECT $1, $3, $4, $5, $6, $7, $8, $9
       WHERE EXISTS (SELECT 1 FROM export_job WHERE id = $1 AND worker = $2 AND status = 'in-progress')
       ON CONFLICT (job_id, name) DO UPDATE SET count = EXCLUDED.count, size = EXCLUDED.size, blob_key = EXCLUDED.blob_key, part = EXCLUDED.part`,
      [id, worker, f.name, f.kind, f.resourceType, f.part, f.count, f.size, f.blobKey],
    );
    return r.rowCount === 1;
  }

  async markTypeDone(id: string, worker: string, type: string, exported: number): Promise<boolean> {
    const r = await this.db.query(
      `UPDATE export_job SET done_types = array_append(done_types, $3), exported = $4
       WHERE id = $1 AND worker = $2 AND status = 'in-progress' AND NOT ($3 = ANY(done_types))`,
      [id, worker, type, exported],
    );
    return r.rowCount === 1;
  }

  async addIssues(id: string, worker: string, issues: OperationOutcomeIssue[]): Promise<void> {
    if (!issues.length) return;
    await this.db.query(`UPDATE export_job SET issues = issues || $3::jsonb WHERE id = $1 AND worker = $2`, [id, worker, JSON.stringify(issues)]);
  }

  async complete(id: string, worker: string, exported: number, ttlSeconds: number): Promise<boolean> {
    const r = await this.db.query(
      `UPDATE export_job SET status = 'completed', completed_at = now(), expires_at = now() + $4 * interval '1 second',
              exported = $3, progress = 'completed', worker = NULL, lease_until = NULL
       WHERE id = $1 AND worker = $2 AND status = 'in-progress'`,
      [id, worker, exported, ttlSeconds],
    );
    return r.rowCount === 1;
  }

  async fail(id: string, worker: string | null, status: number, error: OperationOutcome, ttlSeconds: number): Promise<void> {
    await this.db.query(
      `UPDATE export_job SET status = 'failed', error_status = $3, error = $4, completed_at = now(),
              expires_at = now() + $5 * interval '1 second', worker = NULL, lease_until = NULL
       WHERE id = $1 AND status = 'in-progress' AND ($2::text IS NULL OR worker = $2)`,
      [id, worker, status, JSON.stringify(error), ttlSeconds],
    );
  }

  /**
   * A worker shutting down hands its job back so the next process picks it up without waiting for the lease.
   * `attempts` is not rolled back: it also numbers the attempt's blob folder, which must never be reused.
   */
  async release(id: string, worker: string): Promise<void> {
    await this.db.query(
      `UPDATE export_job SET status = 'accepted', worker = NULL, lease_until = NULL
       WHERE id = $1 AND worker = $2 AND status = 'in-progress'`,
      [id, worker],
    );
  }

  /**
   * DELETE on the status URL. A running job is marked cancelled (its worker stops at its next check and the
   * sweeper deletes it); any other job is deleted at once. Returns the job's former status, or undefined.
   */
  async cancel(id: string, owner: string): Promise<JobStatus | undefined> {
    return this.db.transaction(async (tx) => {
      const r = await tx.query<{ status: JobStatus }>(`SELECT status FROM export_job WHERE id = $1 AND owner = $2 FOR UPDATE`, [id, owner]);
      const status = r.rows[0]?.status;
      if (!status || status === 'cancelled') return undefined;
      if (status === 'in-progress') {
        await tx.query(`UPDATE export_job SET status = 'cancelled', expires_at = now() WHERE id = $1`, [id]);
      } else {
        await tx.query(`DELETE FROM export_job WHERE id = $1`, [id]);
      }
      return status;
    });
  }

  async files(id: string): Promise<ExportFile[]> {
    const r = await this.db.query<FileRow>(`SELECT * FROM export_file WHERE job_id = $1 ORDER BY kind DESC, resource_type, part`, [id]);
    return r.rows.map(toFile);
  }

  async file(id: string, name: string): Promise<ExportFile | undefined> {
    const r = await this.db.query<FileRow>(`SELECT * FROM export_file WHERE job_id = $1 AND name = $2`, [id, name]);
    return r.rows[0] ? toFile(r.rows[0]) : undefined;
  }

  /**
   * Jobs to delete now: completed/failed past their expiry, and cancelled ones nobody runs any more
   * (their lease ran out, so no worker is still writing files).
   */
  async expired(limit = 100): Promise<string[]> {
    const r = await this.db.query<{ id: string }>(
      `SELECT id FROM export_job
       WHERE (status IN ('completed', 'failed') AND expires_at < now())
          OR (status = 'cancelled' AND (lease_until IS NULL OR lease_until < now()))
       ORDER BY expires_at LIMIT $1`,
      [limit],
    );
    return r.rows.map((x) => x.id);
  }

  async delete(id: string, q: Queryable = this.db): Promise<void> {
    await q.query(`DELETE FROM export_job WHERE id = $1`, [id]);
  }
}

interface FileRow {
  name: string;
  kind: 'output' | 'error' | 'deleted';
  resource_type: string;
  part: number;
  count: number;
  size: number | string;
  blob_key: string;
}

function toFile(r: FileRow): ExportFile {
  return { name: r.name, kind: r.kind, resourceType: r.resource_type, part: r.part, count: r.count, size: Number(r.size), blobKey: r.blob_key };
}
