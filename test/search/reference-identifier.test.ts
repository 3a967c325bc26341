/**
 * `:identifier` on reference parameters: HL7 v2 and EHR feeds often reference a patient or an order by its
 * business identifier only (Reference.identifier, no literal reference). Through the REST API, on PGlite and
 * PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, Observation } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const MRN = 'urn:test:mrn';

describe.each(testDatabases())('reference :identifier search on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  const ids: Record<string, string> = {};
  const send = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.fhir}/${path}`, { method, headers: { 'content-type': 'application/fhir+json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
  };
  const found = async (query: string) => {
    const r = await send('GET', `Observation?${query}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return ((r.body as Bundle).entry ?? []).map((e) => e.resource!.id!).sort();
  };
  const obs = (subject: Observation['subject']): Observation => ({
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject,
  });

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db);
    const patient = await send('POST', 'Patient', { resourceType: 'Patient', identifier: [{ system: MRN, value: 'A1' }] });
    ids.onlyIdentifier = (await send('POST', 'Observation', obs({ identifier: { system: MRN, value: 'A1' } }))).body.id;
    ids.both = (await send('POST', 'Observation', obs({ reference: `Patient/${patient.body.id}`, identifier: { system: MRN, value: 'A1' } }))).body.id;
    ids.other = (await send('POST', 'Observation', obs({ identifier: { system: MRN, value: 'B2' } }))).body.id;
    ids.noSystem = (await send('POST', 'Observation', obs({ identifier: { value: 'A1' } }))).body.id;
    ids.literalOnly = (await send('POST', 'Observation', obs({ reference: `Patient/${patient.body.id}` }))).body.id;
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  it('matches system|value, value alone, |value and system|', async () => {
    expect(await found(`subject:identifier=${MRN}|A1`)).toEqual([ids.onlyIdentifier, ids.both].sort());
    expect(await found('subject:identifier=A1')).toEqual([ids.onlyIdentifier, ids.both, ids.noSystem].sort());
    expect(await found('subject:identifier=|A1')).toEqual([ids.noSystem]);
    expect(await found(`subject:identifier=${MRN}|`)).toEqual([ids.onlyIdentifier, ids.both, ids.other].sort());
    expect(await found(`subject:identifier=${MRN}|A1,${MRN}|B2`)).toEqual([ids.onlyIdentifier, ids.both, ids.other].sort());
  });

  it('works through an alias (Observation patient = subject as a Patient)', async () => {
    expect(await found(`patient:identifier=${MRN}|B2`)).toEqual([ids.other]);
  });

  it('reindex gives resources stored before :identifier was indexed their rows (admin API)', async () => {
    // What a database written by an earlier version holds: the resource without its `:identifier` rows.
    await db.query(`DELETE FROM search_token WHERE resource_type = 'Observation' AND id = $1 AND code = 'subject:identifier'`, [ids.onlyIdentifier]);
    expect(await found(`subject:identifier=${MRN}|A1`)).toEqual([ids.both]);
    const admin = (body: unknown) =>
      fetch(`${server.runtime.config.baseUrl}/admin/reindex`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${server.runtime.adminToken}` },
        body: JSON.stringify(body),
      });
    const res = await admin({ type: 'Observation' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ resources: 5, byType: { Observation: 5 } });
    expect(await found(`subject:identifier=${MRN}|A1`)).toEqual([ids.onlyIdentifier, ids.both].sort());
    expect(await found('code=8867-4')).toHaveLength(5); // every other index row is still there
    const bad = await admin({ type: 'Nonsense' });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(await bad.json())).toMatch(/Unknown resource type ..?Nonsense/);
  });

  it('follows updates: an identifier removed no longer matches', async () => {
    const current = (await send('GET', `Observation/${ids.other}`)).body as Observation;
    expect((await send('PUT', `Observation/${ids.other}`, { ...current, subject: { display: 'unknown' } })).status).toBe(200);
    expect(await found(`subject:identifier=${MRN}|B2`)).toEqual([]);
  });
});
