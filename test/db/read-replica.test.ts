/**
 * Searches and history on a real streaming replica (DATABASE_READ_URL): a PostgreSQL of our own and a hot standby
 * made from it with pg_basebackup, each on a port of its own. Replay is paused on the replica to make it lag: a caller
 * that has just written still finds what it wrote (its read waits for the replica, then goes to the primary); a
 * caller that has not written reads the replica.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { migrate } from '../../src/db/migrate.js';
import { openDatabase } from '../../src/db/open.js';
import { ReadRouting } from '../../src/db/read-replica.js';
import { postgresBinaries, type PostgresInstance, startPostgres, startReplica } from '../../tools/postgres-instance.js';
import { freePort } from '../dicom/helpers.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';
import { kickoff, waitForManifest } from '../export/helpers.js';

describe.skipIf(!postgresBinaries())('a streaming read replica', () => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'conflux-replica-'));
  let primary: PostgresInstance;
  let replica: PostgresInstance;
  let db: Database;
  let server: TestServer;
  let replicaAdmin: Database;

  beforeAll(async () => {
    primary = startPostgres({ dir: path.join(work, 'primary'), port: await freePort() });
    db = await openDatabase({ databaseUrl: primary.url(), dataDir: null });
    await migrate(db);
    replica = startReplica(primary, { dir: path.join(work, 'replica'), port: await freePort() });
    replicaAdmin = await openDatabase({ databaseUrl: replica.url(), dataDir: null });
    server = await startTestServer(db, { DATABASE_URL: primary.url(), DATABASE_READ_URL: replica.url(), DATABASE_READ_MAX_WAIT_MS: '200' });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await replicaAdmin?.close();
    await db?.close();
    replica?.stop();
    primary?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const pause = () => replicaAdmin.query('SELECT pg_wal_replay_pause()');
  const resume = () => replicaAdmin.query('SELECT pg_wal_replay_resume()');
  const search = async (q: string) => (await (await fetch(`${server.fhir}/Patient?${q}`)).json()) as { total?: number; entry?: unknown[] };

  it('is a hot standby of the primary', async () => {
    expect((await replicaAdmin.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
  });

  it('a caller that has just written finds it, even while the replica lags', async () => {
    await pause();
    try {
      const created = await fetch(`${server.fhir}/Patient`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Patient', identifier: [{ system: 'urn:replica', value: 'ryw-1' }] }),
      });
      expect(created.status).toBe(201);
      // The replica has not replayed it…
      expect((await replicaAdmin.query("SELECT 1 FROM resource WHERE content LIKE '%ryw-1%'")).rows).toHaveLength(0);
      // …so the search waited DATABASE_READ_MAX_WAIT_MS for it and then asked the primary.
      expect((await search('identifier=urn:replica|ryw-1')).entry).toHaveLength(1);
      const id = ((await created.json()) as { id: string }).id;
      const history = (await (await fetch(`${server.fhir}/Patient/${id}/_history`)).json()) as { entry?: unknown[] };
      expect(history.entry).toHaveLength(1);
    } finally {
      await resume();
    }
    await until(async () => (await replicaAdmin.query("SELECT 1 FROM resource WHERE content LIKE '%ryw-1%'")).rows.length === 1, 'the replica to replay the write');
    expect((await search('identifier=urn:replica|ryw-1')).entry).toHaveLength(1);
  });

  it('exports read the replica once it has the cut, and the primary while it lags: what was written before the kick-off is in the export', async () => {
    const exportPatients = async (mrn: string) => {
      const manifest = await waitForManifest(await kickoff(`${server.fhir}/$export?_type=Patient`));
      const lines: string[] = [];
      for (const o of manifest.output) lines.push(...(await (await fetch(o.url)).text()).trim().split('\n'));
      return lines.filter((l) => l.includes(mrn)).length;
    };
    // Scans of the resource table on the replica (counted by the standby itself; this query does not touch the table).
    const replicaReads = async () =>
      (await replicaAdmin.query<{ n: number }>("SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::int AS n FROM pg_stat_user_tables WHERE relname = 'resource'")).rows[0].n;
    const post = (mrn: string) =>
      fetch(`${server.fhir}/Patient`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient', identifier: [{ system: 'urn:replica', value: mrn }] }) });

    await pause();
    try {
      expect((await post('exp-lag')).status).toBe(201);
      expect(await exportPatients('exp-lag')).toBe(1); // the replica lags: the export read the primary
    } finally {
      await resume();
    }
    expect((await post('exp-caught-up')).status).toBe(201);
    const before = await replicaReads();
    expect(await exportPatients('exp-caught-up')).toBe(1);
    // Statistics are flushed with a delay: wait for the export's reads to show on the replica.
    await until(async () => (await replicaReads()) > before, 'the export to have read the replica');
  });

  it('routes by caller: one that has not written reads the replica, one that has waits for it or reads the primary', async () => {
    const routing = new ReadRouting(db, replicaAdmin, 200, () => undefined);
    await pause();
    try {
      await db.query("INSERT INTO schema_migration (name) VALUES ('zz_replica_probe')");
      const probe = async (q: { query: Database['query'] }) => (await q.query("SELECT 1 FROM schema_migration WHERE name = 'zz_replica_probe'")).rows.length;
      routing.noteWrite('writer');
      expect(await probe(await routing.forRead('reader'))).toBe(0); // the lagging replica
      expect(await probe(await routing.forRead('writer'))).toBe(1); // the primary, after waiting
    } finally {
      await resume();
    }
    // Once the replica has replayed past the writer's write, the writer reads it too, and is forgotten.
    await until(async () => (await routing.forRead('writer')) === replicaAdmin, 'the writer to be sent to the caught-up replica');
    expect(await routing.forRead('writer')).toBe(replicaAdmin);
    await db.query("DELETE FROM schema_migration WHERE name = 'zz_replica_probe'");
  });
});
