import { afterAll, beforeAll } from 'vitest';
import type { Database } from '../../src/db/database.js';
import type { TestDatabase } from './db.js';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';

export interface TestServer extends RunningServer {
  /** FHIR base URL, e.g. http://127.0.0.1:41234/fhir */
  fhir: string;
}

/** A real HTTP server on an ephemeral port over `db`, with every installed plug-in. */
export async function startTestServer(db: Database, env: Record<string, string> = {}): Promise<TestServer> {
  const config = await loadConfig({ AUTH: 'off', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: '/tmp/conflux-test', ...env });
  const server = await startServer(config, { db });
  const fhir = server.runtime.config.fhirBaseUrl;
  return { ...server, fhir };
}

/** Runs `fn` against a test server of its own and stops the server whatever `fn` does. */
export async function withServer<T>(db: Database, env: Record<string, string>, fn: (server: TestServer) => Promise<T>): Promise<T> {
  const server = await startTestServer(db, env);
  try {
    return await fn(server);
  } finally {
    await server.stop();
  }
}

/**
 * One test server for a whole suite, on a fresh database of `backend`: started before the suite's first test,
 * stopped (and its database dropped) after its last. Read `server`, `base` (the FHIR base URL) and `db` inside tests.
 */
export function suiteServer(backend: TestDatabase, env: Record<string, string> = {}): { readonly server: TestServer; readonly base: string; readonly db: Database } {
  let db: Database | undefined;
  let drop: (() => Promise<void>) | undefined;
  let server: TestServer | undefined;
  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db, env);
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });
  const started = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('suiteServer: read it inside a test, after the suite has started');
    return v;
  };
  return {
    get server() {
      return started(server);
    },
    get base() {
      return started(server).fhir;
    },
    get db() {
      return started(db);
    },
  };
}
