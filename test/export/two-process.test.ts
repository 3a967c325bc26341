/**
 * Several server processes on one PostgreSQL: every job runs exactly once, any process answers for any job,
 * and concurrent claims never hand out the same job twice. PostgreSQL only (PGlite is one process by design).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { openDatabase } from '../../src/db/open.js';
import { JobStore } from '../../src/export/index.js';
import { testDatabases } from '../helpers/db.js';
import { downloadAll, kickoff, loadSynthea, waitForManifest } from './helpers.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const pg = testDatabases().find((d) => d.name === 'postgres');

interface Proc {
  child: ChildProcess;
  base: string;
  completed: string[];
}

/** `conflux serve` as its own OS process; resolves once it logs its port. */
function serve(env: Record<string, string>): Promise<Proc> {
  // vitest (Vite) puts BASE_URL=/ into process.env; the server would take it as its public base.
  const { BASE_URL: _vite, ...inherited } = process.env;
  const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), ['src/cli.ts', 'serve'], {
    cwd: ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const completed: string[] = [];
  let log = '';
  return new Promise((resolve, reject) => {
    const onData = (buf: Buffer) => {
      log += buf.toString();
      for (const m of buf.toString().matchAll(/export ([0-9a-f-]{36}): completed/g)) completed.push(m[1]);
      const port = /listening on :(\d+)/.exec(log);
      if (port) resolve({ child, base: `http://127.0.0.1:${port[1]}`, completed });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    child.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${log}`)));
  });
}

function stop(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null) return Promise.resolve();
  return new Promise((r) => {
    p.child.once('exit', () => r());
    p.child.kill('SIGTERM');
  });
}

describe.skipIf(!pg)('export with two server processes on one PostgreSQL', () => {
  let db: Database;
  let url: string;
  let drop: () => Promise<void>;
  let dataDir: string;
  let a: Proc | undefined;
  let b: Proc | undefined;

  beforeAll(async () => {
    const opened = await pg!.open();
    ({ db, drop } = opened);
    url = opened.url!;
    dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-export-'));
    const env = {
      DATABASE_URL: url,
      DATA_DIR: dataDir,
      AUTH: 'off',
      PORT: '0',
      MLLP_PORT: '0',
      DICOM_PORT: '0',
      EXPORT_WORKERS: '2',
      EXPORT_POLL_MS: '30',
      EXPORT_FILE_MAX_RESOURCES: '25',
      EXPORT_MAX_JOBS_PER_CLIENT: '50',
      EXPORT_RETRY_AFTER_SECONDS: '1',
    };
    [a, b] = await Promise.all([serve(env), serve(env)]);
    await loadSynthea(`${a.base}/fhir`, 2);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([stop(a), stop(b)]);
    await drop?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('ten jobs kicked off on both processes each run exactly once and complete correctly', async () => {
    const counts = new Map(
      (await db.query<{ resource_type: string; n: number }>(`SELECT resource_type, count(*)::int AS n FROM resource WHERE NOT deleted GROUP BY resource_type`)).rows.map((r) => [
        r.resource_type,
        Number(r.n),
      ]),
    );
    const statuses = await Promise.all(Array.from({ length: 10 }, (_, i) => kickoff(`${(i % 2 ? a! : b!).base}/fhir/$export`)));
    for (const [i, status] of statuses.entries()) {
      // Either process answers for any job: the state lives in the database and the shared blob store.
      const viaOther = status.replace(/^http:\/\/localhost:\d+/, (i % 2 ? b! : a!).base);
      const m = await waitForManifest(viaOther);
      const got = await downloadAll(m);
      expect(new Map([...got].map(([t, rs]) => [t, rs.length]))).toEqual(counts);
    }
    const ids = statuses.map((s) => s.split('/').pop()!);
    const rows = await db.query<{ id: string; attempts: number; status: string }>(`SELECT id, attempts, status FROM export_job WHERE id = ANY($1::text[])`, [ids]);
    expect(rows.rows.every((r) => r.attempts === 1 && r.status === 'completed')).toBe(true);
    const completions = [...a!.completed, ...b!.completed].filter((id) => ids.includes(id)).sort();
    expect(completions).toEqual([...ids].sort());
  }, 60_000);

  it('concurrent claims from two connection pools never return the same job twice', async () => {
    // The server processes' own workers would claim these jobs too: stop them first.
    await Promise.all([stop(a), stop(b)]);
    const other = await openDatabase({ databaseUrl: url, dataDir: null });
    try {
      const jobs = [new JobStore(db), new JobStore(other)];
      await db.query(`UPDATE export_job SET status = 'completed' WHERE status <> 'completed'`);
      const cut = await jobs[0].cut();
      const created: string[] = [];
      for (let i = 0; i < 30; i++) {
        created.push(await jobs[0].create({ owner: 'race', requestUrl: 'x', request: { level: 'system', typeFilters: {}, outputFormat: 'application/fhir+ndjson', includeAssociatedData: [], access: {} }, issues: [], cut }));
      }
      const claims = await Promise.all(Array.from({ length: 40 }, (_, i) => jobs[i % 2].claim(`w${i}`, 60_000)));
      const claimed = claims.filter((c) => c !== undefined).map((c) => c!.id);
      expect(new Set(claimed).size).toBe(claimed.length);
      expect(claimed.sort()).toEqual([...created].sort());
      await db.query(`DELETE FROM export_job WHERE owner = 'race'`);
    } finally {
      await other.close();
    }
  });
});
