/**
 * Bulk export as a backend service (Epic/Oracle Health style) runs it: a client registered with a JWKS URL,
 * a token from a jose-signed client assertion, a Group export of Synthea patients, polling with Retry-After,
 * every file downloaded with the token. Also: scopes limit the types; a client sees only its own jobs.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { patientCompartmentsOf } from '../../src/fhir/search/index.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { KICKOFF_HEADERS, loadSynthea, type Manifest, waitForManifest } from './helpers.js';

interface Backend {
  clientId: string;
  token(scope: string): Promise<string>;
}

describe.each(testDatabases())('backend service bulk export on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let dataDir: string;
  let jwksServer: http.Server;
  /** One JWKS document per client (servers cache a JWKS URL's keys). */
  const jwks = new Map<string, unknown>();
  let base: string;

  /** Registers a backend client whose public key is served from our JWKS URL, as a vendor would host it. */
  async function registerBackend(scope: string): Promise<Backend> {
    const { publicKey, privateKey } = await generateKeyPair('RS384', { extractable: true });
    const kid = randomUUID();
    jwks.set(`/${kid}/jwks.json`, { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS384', use: 'sig' }] });
    const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/${kid}/jwks.json`;
    const res = await fetch(`${base}/admin/clients`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.runtime.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `bulk ${scope}`, scope, jwks_url: jwksUrl }),
    });
    const reg = await res.json();
    expect(res.status, JSON.stringify(reg)).toBe(201);
    const clientId = reg.client_id as string;
    const tokenUrl = `${base}/auth/token`;
    return {
      clientId,
      async token(scopes) {
        const now = Math.floor(Date.now() / 1000);
        const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: tokenUrl, exp: now + 240, jti: randomUUID() })
          .setProtectedHeader({ alg: 'RS384', kid, typ: 'JWT' })
          .sign(privateKey);
        const t = await fetch(tokenUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'client_credentials',
            scope: scopes,
            client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
            client_assertion: assertion,
          }),
        });
        const body = await t.json();
        expect(t.status, JSON.stringify(body)).toBe(200);
        return body.access_token as string;
      },
    };
  }

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  /** The status URL with the client's token, until the manifest (each 202 on the way checked for Retry-After). */
  const poll = (statusUrl: string, token: string): Promise<Manifest> => waitForManifest(statusUrl, bearer(token));

  async function kickoffWith(url: string, token: string): Promise<string> {
    const res = await fetch(url, { headers: { ...KICKOFF_HEADERS, ...bearer(token) } });
    expect(res.status, await res.clone().text()).toBe(202);
    await res.arrayBuffer();
    return res.headers.get('content-location')!;
  }

  beforeAll(async () => {
    ({ db, drop } = await tdb.open());
    dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-export-'));
    jwksServer = http.createServer((req, res) => {
      const doc = jwks.get(req.url ?? '');
      res.statusCode = doc ? 200 : 404;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(doc ?? { error: 'no such JWKS' }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    server = await startTestServer(db, {
      AUTH: 'on',
      DATA_DIR: dataDir,
      EXPORT_FILE_MAX_RESOURCES: '100',
      EXPORT_POLL_MS: '50',
      EXPORT_RETRY_AFTER_SECONDS: '1',
      EXPORT_MAX_JOBS_PER_CLIENT: '10',
    });
    base = server.runtime.config.baseUrl;
    // The loading system writes through the FHIR API with its own backend token, like any other client.
    const loader = await registerBackend('system/*.cruds');
    await loadSynthea(server.fhir, 6, bearer(await loader.token('system/*.cruds')));
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await new Promise((r) => jwksServer?.close(r));
    await drop?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('Group export of Synthea patients: kick-off, poll, download with the token; every line in a member compartment; counts match the store', async () => {
    const writer = await registerBackend('system/Group.cruds');
    const patients = (await db.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Patient' ORDER BY id`)).rows.map((r) => r.id);
    expect(patients.length).toBe(6);
    const members = patients.slice(0, 4).map((id) => `Patient/${id}`);
    const g = await fetch(`${server.fhir}/Group`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json', ...bearer(await writer.token('system/Group.cruds')) },
      body: JSON.stringify({ resourceType: 'Group', type: 'person', actual: true, member: members.map((reference) => ({ entity: { reference } })) }),
    });
    expect(g.status).toBe(201);
    const group = await g.json();

    const bulk = await registerBackend('system/*.rs');
    const token = await bulk.token('system/*.rs');
    const statusUrl = await kickoffWith(`${server.fhir}/Group/${group.id}/$export?_outputFormat=application%2Ffhir%2Bndjson`, token);
    const m = await poll(statusUrl, token);
    expect(m.requiresAccessToken).toBe(true);
    expect(m.error).toEqual([]);

    const got = new Map<string, number>();
    for (const o of m.output) {
      // Files need the token: without one 401, with another client's 403.
      expect((await fetch(o.url)).status).toBe(401);
      const res = await fetch(o.url, { headers: bearer(token) });
      expect(res.status).toBe(200);
      const lines = (await res.text()).split('\n').filter(Boolean);
      expect(lines.length).toBe(o.count);
      for (const line of lines) {
        const r = JSON.parse(line);
        expect(r.resourceType).toBe(o.type);
        if (!(r.resourceType === 'Group' && r.id === group.id)) {
          expect(patientCompartmentsOf(r).some((c) => members.includes(c)), `${r.resourceType}/${r.id}`).toBe(true);
        }
        got.set(o.type, (got.get(o.type) ?? 0) + 1);
      }
    }
    const expected = await db.query<{ resource_type: string; n: number }>(
      `SELECT resource_type, count(*)::int AS n FROM resource
       WHERE NOT deleted AND (compartments && $1::text[] OR (resource_type = 'Group' AND id = $2)) GROUP BY resource_type`,
      [members, group.id],
    );
    expect(got).toEqual(new Map(expected.rows.map((r) => [r.resource_type, Number(r.n)])));
    expect(got.get('Patient')).toBe(4);
    expect(got.get('Observation')).toBeGreaterThan(0);

    // Another client sees neither the job nor its files.
    const other = await registerBackend('system/*.rs');
    const otherToken = await other.token('system/*.rs');
    expect((await fetch(statusUrl, { headers: bearer(otherToken) })).status).toBe(404);
    expect((await fetch(m.output[0].url, { headers: bearer(otherToken) })).status).toBe(403);
    expect((await fetch(statusUrl, { method: 'DELETE', headers: bearer(otherToken) })).status).toBe(404);
    expect((await fetch(statusUrl)).status).toBe(401);
    // A fresh token of the same client still works (jobs belong to the client, not to one token).
    expect((await fetch(m.output[0].url, { headers: bearer(await bulk.token('system/*.rs')) })).status).toBe(200);
  }, 60_000);

  it('narrow scopes: only the allowed types are exported; a requested forbidden type is reported', async () => {
    const narrow = await registerBackend('system/Patient.rs system/Condition.rs');
    const token = await narrow.token('system/Patient.rs system/Condition.rs');
    const all = await poll(await kickoffWith(`${server.fhir}/$export`, token), token);
    expect(all.output.map((o) => o.type).sort()).toEqual(['Condition', 'Patient']);
    const m = await poll(await kickoffWith(`${server.fhir}/$export?_type=Patient,Observation`, token), token);
    expect(m.output.map((o) => o.type)).toEqual(['Patient']);
    expect(m.error.length).toBe(1);
    const errors = await (await fetch(m.error[0].url, { headers: bearer(token) })).text();
    expect(errors).toMatch(/Observation is not allowed/);
  }, 60_000);

  it('granular scopes (system/Observation.rs?category=...) limit the exported Observations', async () => {
    const scope = 'system/Patient.rs system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    const granular = await registerBackend(scope);
    const token = await granular.token(scope);
    const m = await poll(await kickoffWith(`${server.fhir}/$export?_type=Observation`, token), token);
    const ids: string[] = [];
    for (const o of m.output) {
      expect(o.type).toBe('Observation');
      for (const line of (await (await fetch(o.url, { headers: bearer(token) })).text()).split('\n').filter(Boolean)) {
        const r = JSON.parse(line);
        expect(JSON.stringify(r.category)).toMatch(/"laboratory"/);
        ids.push(r.id);
      }
    }
    const lab = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation' AND NOT deleted AND content LIKE '%"code":"laboratory"%'`,
    );
    expect(ids.length).toBe(Number(lab.rows[0].n));
    expect(ids.length).toBeGreaterThan(0);
  }, 60_000);

  it('a kick-off without a token is a 401', async () => {
    const res = await fetch(`${server.fhir}/$export`, { headers: KICKOFF_HEADERS });
    expect(res.status).toBe(401);
  });
});
