import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { patientCompartmentsOf } from '../../src/fhir/search/index.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { downloadAll, kickoff, KICKOFF_HEADERS, loadSynthea, waitForManifest } from './helpers.js';

async function countsWhere(db: Database, where: string, params: unknown[]): Promise<Map<string, number>> {
  const r = await db.query<{ resource_type: string; n: number }>(
    `SELECT resource_type, count(*)::int AS n FROM resource WHERE NOT deleted AND ${where} GROUP BY resource_type`,
    params,
  );
  return new Map(r.rows.map((x) => [x.resource_type, Number(x.n)]));
}

const countsOf = (got: Map<string, unknown[]>) => new Map([...got].map(([t, rs]) => [t, rs.length]));

describe.each(testDatabases())('Patient and Group export on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let dataDir: string;
  let patients: string[];

  beforeAll(async () => {
    ({ db, drop } = await tdb.open());
    dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-export-'));
    server = await startTestServer(db, { DATA_DIR: dataDir, EXPORT_FILE_MAX_RESOURCES: '40', EXPORT_POLL_MS: '50', EXPORT_RETRY_AFTER_SECONDS: '1' });
    await loadSynthea(server.fhir, 4);
    patients = (await db.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Patient' ORDER BY id`)).rows.map((r) => r.id);
    expect(patients.length).toBe(4);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await drop?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('Patient/$export exports every resource in some Patient compartment, and nothing else', async () => {
    const m = await waitForManifest(await kickoff(`${server.fhir}/Patient/$export`));
    const got = await downloadAll(m);
    expect(countsOf(got)).toEqual(await countsWhere(db, `compartments <> '{}'`, []));
    expect(got.has('Practitioner')).toBe(false);
    expect(got.has('Organization')).toBe(false);
  });

  it('Patient/$export with the patient parameter (POST) exports those compartments only', async () => {
    const chosen = [`Patient/${patients[1]}`];
    const m = await waitForManifest(
      await kickoff(`${server.fhir}/Patient/$export`, {
        method: 'POST',
        body: { resourceType: 'Parameters', parameter: [{ name: 'patient', valueReference: { reference: chosen[0] } }] },
      }),
    );
    const got = await downloadAll(m);
    expect(countsOf(got)).toEqual(await countsWhere(db, `compartments && $1::text[]`, [chosen]));
    for (const [, rs] of got) for (const r of rs) expect(patientCompartmentsOf(r as never)).toContain(chosen[0]);
  });

  it('Group/[id]/$export exports the members’ compartments, the Group and its Patients', async () => {
    const members = [patients[0], patients[2]].map((id) => `Patient/${id}`);
    const res = await fetch(`${server.fhir}/Group`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({
        resourceType: 'Group',
        type: 'person',
        actual: true,
        member: [...members.map((reference) => ({ entity: { reference } })), { entity: { reference: `Patient/${patients[3]}` }, inactive: true }],
      }),
    });
    expect(res.status).toBe(201);
    const group = await res.json();
    const m = await waitForManifest(await kickoff(`${server.fhir}/Group/${group.id}/$export`));
    expect(m.request).toBe(`${server.fhir}/Group/${group.id}/$export`);
    const got = await downloadAll(m);
    for (const [type, rs] of got) {
      for (const r of rs) {
        if (type === 'Group' && r.id === group.id) continue;
        expect(patientCompartmentsOf(r as never).some((c) => members.includes(c)), `${type}/${r.id}`).toBe(true);
      }
    }
    const expected = await countsWhere(db, `(compartments && $1::text[] OR (resource_type = 'Group' AND id = $2))`, [members, group.id]);
    expect(countsOf(got)).toEqual(expected);
    expect(got.get('Patient')!.map((p) => p.id).sort()).toEqual([patients[0], patients[2]].sort());
    expect(got.get('Group')!.map((g) => g.id)).toContain(group.id);
  });

  it('Group/[id]/$export of a missing Group is a 404', async () => {
    const res = await fetch(`${server.fhir}/Group/nope/$export`, { headers: KICKOFF_HEADERS });
    expect(res.status).toBe(404);
    expect((await res.json()).resourceType).toBe('OperationOutcome');
  });

  it('the CapabilityStatement lists the export operations', async () => {
    const cs = await (await fetch(`${server.fhir}/metadata`)).json();
    expect(JSON.stringify(cs)).toMatch(/bulkdata\/OperationDefinition\/export/);
    expect(JSON.stringify(cs)).toMatch(/group-export/);
    const api = await (await fetch(`${server.runtime.config.baseUrl}/openapi.json`)).json();
    expect(Object.keys(api.paths)).toEqual(expect.arrayContaining(['/fhir/$export', '/export/jobs/{id}', '/export/jobs/{id}/files/{name}']));
  });
});
