import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Bundle } from '@medplum/fhirtypes';
import { testDatabases } from '../helpers/db.js';
import { fixturePath } from '../../tools/shared-data.js';
import { startTestServer } from '../helpers/server.js';

describe('graceful shutdown', () => {
  it('finishes a request that is in flight when stop begins, then refuses new connections', async () => {
    const { db, drop } = await testDatabases()[0].open();
    const server = await startTestServer(db);
    try {
      const dir = fixturePath('fhir/synthea');
      const bundle = JSON.parse(readFileSync(path.join(dir, readdirSync(dir).filter((f) => f.endsWith('.json'))[0]), 'utf8')) as Bundle;
      // Begin stopping from inside the request's own transaction: it is certainly in flight then.
      let stopped: Promise<void> | undefined;
      server.runtime.repo.onChange(async () => {
        stopped ??= server.stop();
      });
      const inFlight = fetch(server.fhir, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json', prefer: 'return=minimal' },
        body: JSON.stringify(bundle),
      });
      const res = await inFlight;
      expect(res.status).toBe(200);
      expect(((await res.json()) as Bundle).entry).toHaveLength(bundle.entry?.length ?? 0);
      expect(stopped).toBeDefined();
      await stopped;
      await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
    } finally {
      await server.stop();
      await drop();
    }
  });
});
