import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Patient } from '@medplum/fhirtypes';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/blob/index.js';
import type { Database } from '../../src/db/database.js';
import { makeLogger } from '../../src/facade.js';
import { bulkExportOf, ExportWorker, JobStore } from '../../src/export/index.js';
import { exportSettings } from '../../src/export/settings.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer, withServer } from '../helpers/server.js';
import { downloadAll, kickoff, KICKOFF_HEADERS, loadSynthea, waitForManifest } from './helpers.js';
import { until } from '../helpers/until.js';

const jobId = (statusUrl: string) => statusUrl.split('/').pop()!;

describe.each(testDatabases())('export job lifecycle on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  let dataDir: string;
  let server: TestServer | undefined;
  let blobs: FsBlobStore;
  /** Resources per type now (tests that change the store run before others read it). */
  const currentCounts = async () => {
    const r = await db.query<{ resource_type: string; n: number }>(`SELECT resource_type, count(*)::int AS n FROM resource WHERE NOT deleted GROUP BY resource_type`);
    return new Map(r.rows.map((x) => [x.resource_type, Number(x.n)]));
  };
  const env = (extra: Record<string, string> = {}) => ({
    DATA_DIR: dataDir,
    EXPORT_FILE_MAX_RESOURCES: '10',
    EXPORT_POLL_MS: '50',
    EXPORT_RETRY_AFTER_SECONDS: '1',
    ...extra,
  });

  beforeAll(async () => {
    ({ db, drop } = await tdb.open());
    dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-export-'));
    blobs = new FsBlobStore(path.join(dataDir, 'blobs'));
    await withServer(db, env(), (s) => loadSynthea(s.fhir, 2));
  }, 60_000);
  afterEach(async () => {
    await server?.stop();
    server = undefined;
    await db.query('DELETE FROM export_job');
  });
  afterAll(async () => {
    await drop?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  const jobRow = async (id: string) =>
    (await db.query<{ status: string; done_types: string[]; attempts: number; worker: string | null }>(`SELECT status, done_types, attempts, worker FROM export_job WHERE id = $1`, [id])).rows[0];

  it('DELETE cancels a running export (202), later status calls get 404, and its files are removed', async () => {
    server = await startTestServer(db, env({ EXPORT_THROTTLE_MS: '100' }));
    const status = await kickoff(`${server.fhir}/$export`);
    const id = jobId(status);
    await until(async () => (await blobs.list(`export/${id}/`)).length > 0, 'files being written');
    expect((await jobRow(id)).status).toBe('in-progress');
    const del = await fetch(status, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await fetch(status)).status).toBe(404);
    expect((await fetch(status, { method: 'DELETE' })).status).toBe(404);
    await until(async () => !(await jobRow(id)), 'the worker to drop the job');
    expect(await blobs.list(`export/${id}/`)).toEqual([]);
  });

  it('DELETE on a completed export removes it and its files', async () => {
    server = await startTestServer(db, env());
    const status = await kickoff(`${server.fhir}/$export?_type=Patient`);
    const m = await waitForManifest(status);
    expect((await fetch(m.output[0].url)).status).toBe(200);
    expect((await fetch(status, { method: 'DELETE' })).status).toBe(202);
    expect((await fetch(status)).status).toBe(404);
    expect((await fetch(m.output[0].url)).status).toBe(404);
    expect(await blobs.list(`export/${jobId(status)}/`)).toEqual([]);
  });

  it('too many unfinished exports for one client → 429 with Retry-After', async () => {
    server = await startTestServer(db, env({ EXPORT_WORKERS: '0', EXPORT_MAX_JOBS_PER_CLIENT: '2' }));
    await kickoff(`${server.fhir}/$export`);
    await kickoff(`${server.fhir}/$export`);
    const res = await fetch(`${server.fhir}/$export`, { headers: KICKOFF_HEADERS });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await res.json()).issue[0].code).toBe('throttled');
  });

  it('simultaneous kick-offs cannot overshoot the per-client limit', async () => {
    server = await startTestServer(db, env({ EXPORT_WORKERS: '0', EXPORT_MAX_JOBS_PER_CLIENT: '2' }));
    const results = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const r = await fetch(`${server!.fhir}/$export`, { headers: KICKOFF_HEADERS });
        await r.arrayBuffer();
        return r.status;
      }),
    );
    expect(results.filter((s) => s === 202).length).toBe(2);
    expect(results.filter((s) => s === 429).length).toBe(6);
  });

  it('expired jobs and their files are deleted by the sweeper', async () => {
    server = await startTestServer(db, env({ EXPORT_TTL_SECONDS: '3600' }));
    const status = await kickoff(`${server.fhir}/$export?_type=Patient`);
    const m = await waitForManifest(status);
    const id = jobId(status);
    expect((await blobs.list(`export/${id}/`)).length).toBe(m.output.length);
    const bulk = bulkExportOf(server.runtime)!;
    expect(await bulk.worker.sweep(true)).toBe(0);
    await db.query(`UPDATE export_job SET expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
    expect(await bulk.worker.sweep(true)).toBe(1);
    expect((await fetch(status)).status).toBe(404);
    expect((await fetch(m.output[0].url)).status).toBe(404);
    expect(await blobs.list(`export/${id}/`)).toEqual([]);
  });

  it('transactionTime is a consistent cut: later updates, creates and deletes do not show', async () => {
    server = await startTestServer(db, env({ EXPORT_WORKERS: '0' }));
    const counts = await currentCounts();
    const status = await kickoff(`${server.fhir}/$export?_type=Patient,Condition`);
    // The store changes after kick-off but before any worker reads it.
    const pid = (await db.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Patient' ORDER BY id LIMIT 1`)).rows[0].id;
    const p = await (await fetch(`${server.fhir}/Patient/${pid}`)).json();
    const put = await fetch(`${server.fhir}/Patient/${pid}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...p, birthDate: '1900-01-01' }),
    });
    expect(put.status).toBe(200);
    const created = await fetch(`${server.fhir}/Patient`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Later' }] }),
    });
    expect(created.status).toBe(201);
    const newId = (await created.json()).id;
    const cid = (await db.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Condition' AND NOT deleted ORDER BY id LIMIT 1`)).rows[0].id;
    expect((await fetch(`${server.fhir}/Condition/${cid}`, { method: 'DELETE' })).status).toBe(200);

    const bulk = bulkExportOf(server.runtime)!;
    const worker = new ExportWorker(db, bulk.jobs, bulk.blobs, { ...bulk.settings, workers: 1 }, makeLogger('test-worker'));
    worker.start();
    try {
      const m = await waitForManifest(status);
      const got = await downloadAll(m);
      const exported = got.get('Patient')!;
      expect(exported.length).toBe(counts.get('Patient'));
      expect(exported.map((x) => x.id)).not.toContain(newId);
      const old = exported.find((x) => x.id === pid)!;
      expect(old.birthDate).toBe(p.birthDate);
      expect(old.meta.versionId).toBe(p.meta.versionId);
      expect(got.get('Condition')!.map((x) => x.id)).toContain(cid);
      expect(got.get('Condition')!.length).toBe(counts.get('Condition'));
      expect(Date.parse(m.transactionTime)).toBeLessThan(Date.parse((await (await fetch(`${server.fhir}/Patient/${newId}`)).json()).meta.lastUpdated));
    } finally {
      await worker.stop();
      // Put the store back as the other tests expect it.
      await db.query(`DELETE FROM resource WHERE resource_type = 'Patient' AND id = $1`, [newId]);
      await fetch(`${server.fhir}/Patient/${pid}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ ...p, meta: undefined }) });
    }
  });

  it.skipIf(tdb.name !== 'postgres')('a write in flight at kick-off is waited for and exported; an unrelated long transaction does not hold the export up', async () => {
    server = await startTestServer(db, env());
    const repo = server.runtime.repo;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let written!: () => void;
    const wrote = new Promise<void>((r) => (written = r));
    // A FHIR write that has drawn its seq but not committed when the export starts.
    const inflight = db.transaction(async (tx) => {
      const patient: Patient = { resourceType: 'Patient', name: [{ family: 'InFlight' }] };
      const r = await repo.create(patient, { tx });
      written();
      await gate;
      return r.resource.id as string;
    });
    await wrote;
    // Unrelated: a long transaction holding an xid on another table.
    let releaseOther!: () => void;
    const otherGate = new Promise<void>((r) => (releaseOther = r));
    const other = db.transaction(async (tx) => {
      await tx.query(`CREATE TEMP TABLE unrelated (x int)`);
      await tx.query(`INSERT INTO unrelated VALUES (1)`);
      await otherGate;
    });
    try {
      const status = await kickoff(`${server.fhir}/$export?_type=Patient`);
      const job = (await db.query<{ cut_xids: string[] }>(`SELECT cut_xids FROM export_job WHERE id = $1`, [jobId(status)])).rows[0];
      expect(job.cut_xids.length).toBe(1);
      // The job cannot read while the write is open: the status says what it waits for.
      await until(async () => {
        const r = await fetch(status);
        await r.arrayBuffer();
        return r.status === 202 && /waiting for 1 write transaction/.test(r.headers.get('x-progress') ?? '') ? true : undefined;
      }, 'the worker to wait for the open write');
      release();
      const id = await inflight;
      const m = await waitForManifest(status);
      const got = await downloadAll(m);
      expect(got.get('Patient')!.map((p) => p.id)).toContain(id);
      // The other transaction is still open: it did not block the export.
      const st = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'idle in transaction'`);
      expect(Number(st.rows[0].n)).toBeGreaterThan(0);
      await db.query(`DELETE FROM resource WHERE resource_type = 'Patient' AND id = $1`, [id]);
    } finally {
      release();
      releaseOther();
      await inflight.catch(() => undefined);
      await other.catch(() => undefined);
    }
  });

  it('a server stopped in the middle hands the job back; the next server finishes it without duplicates', async () => {
    server = await startTestServer(db, env({ EXPORT_THROTTLE_MS: '150' }));
    const counts = await currentCounts();
    const status = await kickoff(`${server.fhir}/$export`);
    const id = jobId(status);
    await until(async () => ((await jobRow(id)).done_types.length > 0 ? true : undefined), 'at least one finished type');
    const done = (await jobRow(id)).done_types;
    await server.stop();
    server = undefined;
    const after = await jobRow(id);
    expect(after.status).toBe('accepted');
    expect(after.worker).toBeNull();
    expect(after.done_types).toEqual(done);
    expect(after.done_types.length).toBeLessThan(counts.size);

    server = await startTestServer(db, env());
    const m = await waitForManifest(status.replace(/^http:\/\/localhost:\d+/, server.runtime.config.baseUrl));
    const got = await downloadAll(m);
    expect(new Map([...got].map(([t, rs]) => [t, rs.length]))).toEqual(counts);
    for (const [, rs] of got) expect(new Set(rs.map((r) => r.id)).size).toBe(rs.length);
    expect((await jobRow(id)).status).toBe('completed');
  });

  it('a crashed worker’s job is re-run after its lease expires, discarding its partial files', async () => {
    server = await startTestServer(db, env({ EXPORT_WORKERS: '0' }));
    const counts = await currentCounts();
    const status = await kickoff(`${server.fhir}/$export?_type=Patient,Observation`);
    const id = jobId(status);
    const jobs = new JobStore(db);
    // A worker claims the job, writes half a type, then dies (no heartbeat, no release).
    // A long lease, ended below by hand: a 100 ms lease could lapse on a busy machine before the next line runs.
    const claimed = await jobs.claim('crashed-worker', 600_000);
    expect(claimed?.id).toBe(id);
    const junkKey = `export/${id}/1/Observation-1.ndjson`;
    await blobs.put(junkKey, ['{"resourceType":"Observation","id":"half-written"}\n']);
    expect(await jobs.addFile(id, 'crashed-worker', { name: 'Observation-1.ndjson', kind: 'output', resourceType: 'Observation', part: 1, count: 1, size: 10, blobKey: junkKey })).toBe(true);
    expect(await jobs.claim('another-worker', 100)).toBeUndefined();
    await db.query("UPDATE export_job SET lease_until = now() - interval '1 second' WHERE id = $1", [id]);

    const settings = { ...exportSettings({ EXPORT_FILE_MAX_RESOURCES: '10', EXPORT_POLL_MS: '50' }), workers: 1 };
    const worker = new ExportWorker(db, jobs, blobs, settings, makeLogger('test-worker'));
    worker.start();
    try {
      const m = await waitForManifest(status);
      const got = await downloadAll(m);
      expect(got.get('Observation')!.length).toBe(counts.get('Observation'));
      expect(got.get('Observation')!.map((o) => o.id)).not.toContain('half-written');
      expect(got.get('Patient')!.length).toBe(counts.get('Patient'));
      expect(await blobs.stat(junkKey)).toBeUndefined();
      expect((await jobRow(id)).attempts).toBe(2);
    } finally {
      await worker.stop();
    }
  });

  it('a job that never finishes fails after EXPORT_MAX_ATTEMPTS claims; status answers 500 with an OperationOutcome', async () => {
    server = await startTestServer(db, env({ EXPORT_WORKERS: '0' }));
    const status = await kickoff(`${server.fhir}/$export?_type=Patient`);
    const jobs = new JobStore(db);
    expect((await jobs.claim('crashed-worker', 100))?.id).toBe(jobId(status));
    const settings = { ...exportSettings({ EXPORT_POLL_MS: '50', EXPORT_MAX_ATTEMPTS: '1' }), workers: 1 };
    const worker = new ExportWorker(db, jobs, blobs, settings, makeLogger('test-worker'));
    worker.start();
    try {
      const res = await until(async () => {
        const r = await fetch(status);
        if (r.status === 202) {
          await r.arrayBuffer();
          return undefined;
        }
        return r;
      }, 'the job to fail');
      expect(res.status).toBe(500);
      const oo = await res.json();
      expect(oo.resourceType).toBe('OperationOutcome');
      expect(oo.issue[0].diagnostics).toMatch(/never finished/);
    } finally {
      await worker.stop();
    }
  });

  it('download needs the job to exist and the file to be listed', async () => {
    server = await startTestServer(db, env());
    const status = await kickoff(`${server.fhir}/$export?_type=Patient`);
    await waitForManifest(status);
    expect((await fetch(`${status}/files/..%2F..%2Fserver.json`)).status).toBe(404);
    expect((await fetch(`${status}/files/Observation-1.ndjson`)).status).toBe(404);
    expect((await fetch(`${server.runtime.config.baseUrl}/export/jobs/00000000-0000-0000-0000-000000000000`)).status).toBe(404);
  });
});
