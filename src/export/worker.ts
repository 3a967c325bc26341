/**
 * The bulk export worker: claims jobs from the database, runs each one type after another (kick-off filters, the
 * rows, deletions with _since, the error file), renews its lease, and sweeps expired outputs. One module past the
 * usual size on purpose: every step of a job shares its lease, abort signal and issue list, and reads best top to
 * bottom; the pieces with a second user already live beside it (jobs.ts, ndjson-files.ts, elements.ts, query.ts).
 */
import type { ReadRouting } from '../db/read-replica.js';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { BlobStore } from '../blob/index.js';
import type { Database } from '../db/database.js';
import type { Logger } from '../facade.js';
import { FhirError, outcome } from '../fhir/outcome.js';
import { patientCompartmentsOf, searchIds } from '../fhir/search/index.js';
import { compartmentParamsOf } from '../fhir/search/compartments.js';
import { elementsFor, subsetJson } from './elements.js';
import { type ExportFile, type ExportJob, JobStore } from './jobs.js';
import { writeNdjsonParts } from './ndjson-files.js';
import { deletedQuery, PRESENT_TYPES_SQL, type TypeQueryOptions, typeQuery } from './query.js';
import type { ExportSettings } from './settings.js';
import { ConfluxError } from '../errors.js';

/** Why a running job stopped early. */
class Stop extends ConfluxError {
  constructor(readonly why: 'shutdown' | 'lost') {
    super('cancelled', why === 'shutdown' ? 'server shutting down' : 'job cancelled or taken over');
  }
}

interface Row {
  id: string;
  content: string;
  late: boolean;
}

export const blobPrefix = (jobId: string) => `export/${jobId}/`;

/**
 * Runs export jobs from the database queue. Each process runs `settings.workers` loops; a loop claims a job
 * (SKIP LOCKED), holds it by renewing a lease, and writes its files type by type. A type's files are
 * recorded before the type is marked done, so a job taken over after a crash or a shutdown resumes with
 * the first unfinished type and never duplicates a resource.
 */
export class ExportWorker {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly active = new Map<string, AbortController>();
  private wakeUp?: () => void;
  private lastSweep = 0;

  /** Where each running job reads resources from: the read replica once it has everything of the cut, or the primary. */
  private readonly sources = new Map<string, Database>();

  constructor(
    private readonly db: Database,
    private readonly jobs: JobStore,
    private readonly blobs: BlobStore,
    private readonly settings: ExportSettings,
    private readonly log: Logger,
    private readonly reads?: ReadRouting,
  ) {}

  private source(job: ExportJob): Database {
    return this.sources.get(job.id) ?? this.db;
  }

  get started(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running || this.settings.workers === 0) return;
    this.running = true;
    for (let i = 0; i < this.settings.workers; i++) this.loops.push(this.loop());
    this.log.info(`export worker ${this.id} started (${this.settings.workers} loop(s))`);
  }

  /** Stops claiming, hands running jobs back to the queue, and waits for the loops to end. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const c of this.active.values()) c.abort(new Stop('shutdown'));
    this.wakeUp?.();
    await Promise.all(this.loops);
    this.loops = [];
  }

  /** A kick-off on this process: look for work now instead of at the next poll. */
  wake(): void {
    this.wakeUp?.();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      let job: ExportJob | undefined;
      try {
        job = await this.jobs.claim(this.id, this.settings.leaseMs);
        if (job) await this.run(job);
        else {
          await this.sweep();
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, this.settings.pollMs);
            this.wakeUp = () => {
              clearTimeout(t);
              resolve();
            };
          });
        }
      } catch (err) {
        this.log.error(`export worker: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, this.settings.pollMs));
      }
    }
  }

  /** Deletes expired jobs and their files, and cancelled jobs nobody runs any more. */
  async sweep(force = false): Promise<number> {
    if (!force && Date.now() - this.lastSweep < Math.max(10 * this.settings.pollMs, 5000)) return 0;
    this.lastSweep = Date.now();
    const ids = await this.jobs.expired();
    for (const id of ids) {
      await this.blobs.deletePrefix(blobPrefix(id));
      await this.jobs.delete(id);
    }
    return ids.length;
  }

  private async run(job: ExportJob): Promise<void> {
    if (job.attempts > this.settings.maxAttempts) {
      this.log.error(`export ${job.id}: claimed ${job.attempts} times without finishing; failing it`);
      await this.jobs.fail(job.id, this.id, 500, outcome('error', 'exception', `The export was started ${job.attempts - 1} times and never finished`), this.settings.ttlSeconds);
      await this.deleteOutputs(job.id);
      return;
    }
    const ctl = new AbortController();
    this.active.set(job.id, ctl);
    let exported = 0;
    let progress = 'starting';
    const beat = setInterval(() => {
      this.jobs
        .heartbeat(job.id, this.id, this.settings.leaseMs, progress, exported)
        .then((ok) => {
          if (!ok) ctl.abort(new Stop('lost'));
        })
        .catch((err) => this.log.warn(`export ${job.id}: heartbeat failed: ${(err as Error).message}`));
    }, Math.max(50, Math.floor(this.settings.leaseMs / 3)));
    try {
      if (job.cutXids.length) {
        progress = `waiting for ${job.cutXids.length} write transaction(s) that were open at kick-off`;
        await this.jobs.heartbeat(job.id, this.id, this.settings.leaseMs, progress, exported);
      }
      await this.jobs.waitForCut(job.cutXids, ctl.signal);
      // Everything of the cut is committed on the primary now; a replica that has replayed that far holds it too.
      if (this.reads) this.sources.set(job.id, await this.reads.caughtUpNow());
      // An earlier attempt may have left files of the type it was writing: forget them, then resume.
      for (const f of await this.jobs.dropUnfinishedFiles(job.id, job.doneTypes)) await this.blobs.delete(f.blobKey);
      for (const f of await this.jobs.files(job.id)) if (f.kind === 'output') exported += f.count;
      const types = await this.typesOf(job);
      const issues: OperationOutcomeIssue[] = [];
      let i = 0;
      for (const type of types) {
        i++;
        if (job.doneTypes.includes(type)) continue;
        progress = `exporting ${type} (${i} of ${types.length} types), ${exported} resources so far`;
        exported += await this.exportType(job, type, ctl.signal, issues);
        if (!(await this.jobs.markTypeDone(job.id, this.id, type, exported))) throw new Stop('lost');
      }
      await this.jobs.addIssues(job.id, this.id, issues);
      await this.writeErrorFile(job, [...job.issues, ...issues]);
      if (!(await this.jobs.complete(job.id, this.id, exported, this.settings.ttlSeconds))) throw new Stop('lost');
      await this.deleteStrayBlobs(job.id);
      this.log.info(`export ${job.id}: completed, ${exported} resources in ${types.length} types`);
    } catch (err) {
      const reason = ctl.signal.aborted ? ctl.signal.reason : err;
      await this.afterFailure(job, reason);
    } finally {
      clearInterval(beat);
      this.active.delete(job.id);
      this.sources.delete(job.id);
    }
  }

  private async afterFailure(job: ExportJob, err: unknown): Promise<void> {
    if (err instanceof Stop && err.why === 'shutdown') {
      await this.jobs.release(job.id, this.id);
      this.log.info(`export ${job.id}: handed back to the queue (shutdown)`);
      return;
    }
    if (err instanceof Stop) {
      const now = await this.jobs.get(job.id);
      // Cancelled (or already deleted): clean up. Taken over by another worker: its files are not ours to touch.
      if (!now || now.status === 'cancelled') {
        await this.blobs.deletePrefix(blobPrefix(job.id));
        await this.jobs.delete(job.id);
        this.log.info(`export ${job.id}: cancelled`);
      }
      return;
    }
    const fe = err instanceof FhirError ? err : undefined;
    this.log.error(`export ${job.id} failed: ${(err as Error).message}`);
    await this.jobs.fail(
      job.id,
      this.id,
      fe?.status ?? 500,
      fe?.outcome ?? outcome('error', 'exception', `The export failed: ${(err as Error).message}`),
      this.settings.ttlSeconds,
    );
    await this.deleteOutputs(job.id);
  }

  private async deleteOutputs(jobId: string): Promise<void> {
    await this.blobs.deletePrefix(blobPrefix(jobId));
  }

  /** Blobs of an earlier attempt that no file row references (a stale worker's last write). */
  private async deleteStrayBlobs(jobId: string): Promise<void> {
    const keep = new Set((await this.jobs.files(jobId)).map((f) => f.blobKey));
    for (const b of await this.blobs.list(blobPrefix(jobId))) if (!keep.has(b.key)) await this.blobs.delete(b.key);
  }

  /** The types to export, in a stable order: present in the store, requested, allowed, and in scope for the level. */
  private async typesOf(job: ExportJob): Promise<string[]> {
    const present = (await this.source(job).query<{ rt: string }>(PRESENT_TYPES_SQL)).rows.map((r) => r.rt);
    const req = job.request;
    const requested = req.types ? new Set(req.types) : undefined;
    if (requested && req.includeAssociatedData.includes('LatestProvenanceResources')) requested.add('Provenance');
    const allowed = req.access.allowedTypes ? new Set(req.access.allowedTypes) : undefined;
    return present
      .filter((t) => !requested || requested.has(t))
      .filter((t) => !allowed || allowed.has(t))
      .filter((t) => req.level === 'system' || t === 'Patient' || (req.level === 'group' && t === 'Group') || compartmentParamsOf(t).length > 0)
      .sort();
  }

  /** Which compartments a type is restricted to, from the level, the patient list and the token. */
  private scope(job: ExportJob, type: string): Pick<TypeQueryOptions, 'compartments' | 'extraIds'> {
    const req = job.request;
    const tokenLimit = req.access.patientCompartments;
    let compartments: 'any' | string[] | undefined =
      req.level === 'system' ? undefined : (req.patients ?? 'any');
    if (tokenLimit) {
      compartments = compartments === undefined || compartments === 'any' ? tokenLimit : compartments.filter((c) => tokenLimit.includes(c));
    }
    const extraIds = req.level === 'group' && type === 'Group' && req.groupId ? [req.groupId] : undefined;
    return { compartments, extraIds };
  }

  /**
   * Ids a type may export: those its `_typeFilter` alternatives match, intersected with those the token's
   * granular scopes (`system/Observation.rs?category=...`) match. undefined → no filter on this type.
   */
  private async filterIds(job: ExportJob, type: string, issues: OperationOutcomeIssue[]): Promise<Set<string> | undefined | 'skip'> {
    const requested = await this.matchAny(this.source(job), type, job.request.typeFilters[type], '_typeFilter', issues);
    if (requested === 'skip') return 'skip';
    const granted = await this.matchAny(this.source(job), type, job.request.access.typeCriteria?.[type], 'scope', issues);
    if (granted === 'skip') return 'skip';
    if (!requested || !granted) return requested ?? granted;
    return new Set([...requested].filter((id) => granted.has(id)));
  }

  /** Union of the ids each alternative (a list of search parameters) matches; undefined when there are none. */
  private async matchAny(
    db: Database,
    type: string,
    alternatives: Array<Array<[string, string]>> | undefined,
    what: '_typeFilter' | 'scope',
    issues: OperationOutcomeIssue[],
  ): Promise<Set<string> | undefined | 'skip'> {
    if (!alternatives?.length) return undefined;
    const ids = new Set<string>();
    for (const params of alternatives) {
      const found = params.length ? await searchIds(db, type, params, this.settings.typeFilterMaxIds + 1) : undefined;
      if (!found) return undefined; // an alternative without criteria grants the whole type
      if (found.length > this.settings.typeFilterMaxIds) {
        issues.push({
          severity: 'error',
          code: 'too-costly',
          diagnostics: `${what} ${type}?${new URLSearchParams(params)} matches more than ${this.settings.typeFilterMaxIds} resources (EXPORT_TYPEFILTER_MAX_IDS); ${type} was not exported`,
          expression: [what === 'scope' ? '_type' : '_typeFilter'],
        });
        return 'skip';
      }
      for (const id of found) ids.add(id);
    }
    return ids;
  }

  private async exportType(job: ExportJob, type: string, signal: AbortSignal, issues: OperationOutcomeIssue[]): Promise<number> {
    const ids = await this.filterIds(job, type, issues);
    if (ids === 'skip') return 0;
    const { compartments, extraIds } = this.scope(job, type);
    if (Array.isArray(compartments) && compartments.length === 0 && !extraIds?.length) return 0;
    const q = typeQuery({ type, cutSeq: job.cutSeq, since: job.request.since, compartments, extraIds });
    const keep = elementsFor(job.request.elements, type);
    const inScope = (row: Row): boolean => {
      if (ids && !ids.has(row.id)) return false;
      // History rows carry no stored compartments: decide from the version's own references.
      if (row.late && compartments !== undefined && !extraIds?.includes(row.id)) {
        const c = patientCompartmentsOf(JSON.parse(row.content) as Resource);
        if (compartments === 'any' ? c.length === 0 : !c.some((x) => compartments.includes(x))) return false;
      }
      return true;
    };
    const simple = !ids && !keep && compartments === undefined;
    const db = this.source(job);
    const batchSize = this.settings.batchSize;
    async function* lines(): AsyncGenerator<string[]> {
      for await (const rows of prefetch(db.cursor<Row>(q.sql, q.params, batchSize))) {
        if (simple) yield rows.map((r) => r.content);
        else {
          const out: string[] = [];
          for (const r of rows) if (inScope(r)) out.push(keep ? subsetJson(r.content, keep) : r.content);
          if (out.length) yield out;
        }
      }
    }
    const written = await this.writeFiles(job, type, 'output', lines(), signal);
    if (job.request.since) await this.exportDeleted(job, type, ids !== undefined, compartments, extraIds, signal, issues);
    return written;
  }

  /**
   * A `_since` export also lists what was deleted since then, so a client keeping a copy can delete it too: one
   * transaction Bundle with a DELETE entry per line (Bulk Data 2.0 manifest `deleted`).
   */
  private async exportDeleted(
    job: ExportJob,
    type: string,
    filtered: boolean,
    compartments: TypeQueryOptions['compartments'],
    extraIds: string[] | undefined,
    signal: AbortSignal,
    issues: OperationOutcomeIssue[],
  ): Promise<void> {
    const q = deletedQuery({ type, cutSeq: job.cutSeq, since: job.request.since! });
    const rows = this.source(job).cursor<{ id: string; previous: string | null }>(q.sql, q.params, this.settings.batchSize);
    const inScope = (r: { id: string; previous: string | null }): boolean => {
      if (compartments === undefined || extraIds?.includes(r.id)) return true;
      const c = r.previous ? patientCompartmentsOf(JSON.parse(r.previous) as Resource) : [];
      return compartments === 'any' ? c.length > 0 : c.some((x) => compartments.includes(x));
    };
    let skipped = 0;
    async function* lines(): AsyncGenerator<string[]> {
      for await (const batch of rows) {
        const kept = batch.filter(inScope);
        // Search criteria cannot be evaluated on what no longer exists: a filtered type's deletions are not listed.
        if (filtered) skipped += kept.length;
        else if (kept.length) {
          yield kept.map((r) => JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${type}/${r.id}` } }] }));
        }
      }
    }
    await this.writeFiles(job, type, 'deleted', lines(), signal);
    if (skipped) {
      issues.push({
        severity: 'warning',
        code: 'incomplete',
        diagnostics: `${skipped} ${type} resource(s) deleted since _since are not listed in "deleted": _typeFilter and granular scopes cannot be evaluated on deleted resources`,
        expression: ['_since'],
      });
    }
  }

  /** Streams ndjson lines into the job's numbered files of one type and kind, recording each as it completes. */
  private writeFiles(job: ExportJob, type: string, kind: 'output' | 'deleted', lines: AsyncIterable<string[]>, signal: AbortSignal): Promise<number> {
    const stem = kind === 'output' ? type : `${type}-deleted`;
    return writeNdjsonParts(this.blobs, lines, {
      maxPerFile: this.settings.maxResourcesPerFile,
      signal,
      keyOf: (part) => `${blobPrefix(job.id)}${job.attempts}/${stem}-${part}.ndjson`,
      onFile: async (f) => {
        const file: ExportFile = { name: `${stem}-${f.part}.ndjson`, kind, resourceType: type, part: f.part, count: f.count, size: f.size, blobKey: f.key };
        if (!(await this.jobs.addFile(job.id, this.id, file))) throw new Stop('lost');
        if (this.settings.throttleMs) await sleep(this.settings.throttleMs, signal);
        signal.throwIfAborted();
      },
    });
  }

  /** The manifest's error file: one OperationOutcome per issue (warnings included). */
  private async writeErrorFile(job: ExportJob, issues: OperationOutcomeIssue[]): Promise<void> {
    if (!issues.length) return;
    const key = `${blobPrefix(job.id)}${job.attempts}/OperationOutcome-errors.ndjson`;
    const lines = issues.map((issue) => JSON.stringify({ resourceType: 'OperationOutcome', issue: [issue] }));
    const { size } = await this.blobs.put(key, [`${lines.join('\n')}\n`]);
    const file: ExportFile = { name: 'errors.ndjson', kind: 'error', resourceType: 'OperationOutcome', part: 1, count: lines.length, size, blobKey: key };
    if (!(await this.jobs.addFile(job.id, this.id, file))) throw new Stop('lost');
  }
}

/**
 * Asks the source for its next item while the consumer still works on the current one, so the database
 * fetches the next batch while the previous one is being written.
 */
async function* prefetch<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  let next = it.next();
  let finished = false;
  try {
    for (;;) {
      const r = await next;
      if (r.done) {
        finished = true;
        return;
      }
      next = it.next();
      yield r.value;
    }
  } finally {
    if (!finished) {
      // Let the outstanding fetch settle before closing the cursor, or the close would race it. Its failure, if any,
      // is moot: the caller stopped reading (it failed or finished early) and is already handling that.
      await next.catch(() => undefined);
      await it.return?.();
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
