import type { Database } from '../../src/db/database.js';
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
