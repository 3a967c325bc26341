import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../../src/config.js';
import { openDatabase } from '../../src/db/open.js';
import type { Database } from '../../src/db/database.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { deviceStore, type DeviceStore } from '../../src/devices/index.js';

export interface TestEnv {
  rt: Runtime;
  db: Database;
  store: DeviceStore;
  close(): Promise<void>;
  patient(name: string): Promise<string>;
}

/** In-memory PGlite, or a fresh schema on TEST_DATABASE_URL when `kind` is 'postgres'. */
export async function openTestEnv(kind: 'pglite' | 'postgres' = 'pglite'): Promise<TestEnv> {
  let db: Database;
  let dropSchema: (() => Promise<void>) | undefined;
  if (kind === 'postgres') {
    const url = process.env.TEST_DATABASE_URL as string;
    const schema = `devices_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    const u = new URL(url);
    u.searchParams.set('options', `-c search_path=${schema}`);
    db = await openDatabase({ databaseUrl: u.toString(), dataDir: null });
    dropSchema = async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    };
  } else {
    db = await openDatabase({ dataDir: null });
  }
  const rt = await createRuntime(loadConfig({ AUTH: 'off', PORT: '0' }), { db });
  const store = deviceStore({ db, repo: rt.repo, router: rt.router });
  return {
    rt,
    db,
    store,
    async patient(name: string) {
      const p = await store.create<Patient>({ resourceType: 'Patient', name: [{ family: name }] });
      return `Patient/${p.id}`;
    },
    async close() {
      await rt.close();
      await db.close();
      await dropSchema?.();
    },
  };
}

export const databases: Array<'pglite' | 'postgres'> = process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
