import type { Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../../src/config.js';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
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
  const backend = testDatabases().find((d) => d.name === kind);
  if (!backend) throw new Error(`no ${kind} test database (is TEST_DATABASE_URL set?)`);
  const { db, drop } = await backend.open();
  const rt = await createRuntime(await loadConfig({ AUTH: 'off', PORT: '0' }), { db });
  const store = deviceStore({ db, repo: rt.repo, write: rt.write });
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
      await drop();
    },
  };
}

export const databases: Array<'pglite' | 'postgres'> = process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
