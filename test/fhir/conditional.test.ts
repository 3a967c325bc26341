import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, Observation, OperationOutcome, Patient } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const JSON_HEADERS = { 'content-type': 'application/fhir+json' };
const MRN = 'http://hospital.example/mrn';

describe.each(testDatabases())('FHIR conditional interactions on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let base: string;
  const send = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/${path}`, { method, headers: { ...JSON_HEADERS, ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
  const patient = (value: string, extra: Partial<Patient> = {}): Patient => ({
    resourceType: 'Patient',
    identifier: [{ system: MRN, value }],
    ...extra,
  });

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db);
    base = server.fhir;
  });
  afterAll(async () => {
    await server.stop();
    await drop();
  });

  it('conditional create: no match → 201, one match → 200 with the existing resource, two → 412', async () => {
    const cond = { 'if-none-exist': `identifier=${MRN}|cc-1` };
    const first = await send('POST', 'Patient', patient('cc-1'), cond);
    expect(first.status).toBe(201);
    const created = (await first.json()) as Patient;
    const again = await send('POST', 'Patient', patient('cc-1', { gender: 'male' }), cond);
    expect(again.status).toBe(200);
    expect(((await again.json()) as Patient).id).toBe(created.id);

    await send('POST', 'Patient', patient('cc-dup'));
    await send('POST', 'Patient', patient('cc-dup'));
    const ambiguous = await send('POST', 'Patient', patient('cc-dup'), { 'if-none-exist': `identifier=${MRN}|cc-dup` });
    expect(ambiguous.status).toBe(412);
    expect(((await ambiguous.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('more than one');
  });

  it('conditional create is race-free: 10 concurrent identical requests create exactly one resource', async () => {
    const results = await Promise.all(
      Array.from({ length: 10 }, () => send('POST', 'Patient', patient('race-1'), { 'if-none-exist': `identifier=${MRN}|race-1` })),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 200)).toHaveLength(9);
    const ids = new Set(await Promise.all(results.map(async (r) => ((await r.json()) as Patient).id)));
    expect(ids.size).toBe(1);
  });

  it('conditional update: creates on no match, updates the single match, 412 on several', async () => {
    const created = await send('PUT', `Patient?identifier=${encodeURIComponent(`${MRN}|cu-1`)}`, patient('cu-1', { active: true }));
    expect(created.status).toBe(201);
    const id = ((await created.json()) as Patient).id;
    const updated = await send('PUT', `Patient?identifier=${encodeURIComponent(`${MRN}|cu-1`)}`, patient('cu-1', { active: false }));
    expect(updated.status).toBe(200);
    const p = (await updated.json()) as Patient;
    expect(p.id).toBe(id);
    expect(p.meta?.versionId).toBe('2');
    await send('POST', 'Patient', patient('cu-dup'));
    await send('POST', 'Patient', patient('cu-dup'));
    expect((await send('PUT', `Patient?identifier=${encodeURIComponent(`${MRN}|cu-dup`)}`, patient('cu-dup'))).status).toBe(412);
  });

  it('conditional delete: one match, or several with _multiple=true', async () => {
    const p = (await (await send('POST', 'Patient', patient('cd-1'))).json()) as Patient;
    const del = await send('DELETE', `Patient?identifier=${encodeURIComponent(`${MRN}|cd-1`)}`);
    expect(del.status).toBe(200);
    expect((await fetch(`${base}/Patient/${p.id}`)).status).toBe(410);

    await send('POST', 'Patient', patient('cd-many'));
    await send('POST', 'Patient', patient('cd-many'));
    expect((await send('DELETE', `Patient?identifier=${encodeURIComponent(`${MRN}|cd-many`)}`)).status).toBe(412);
    const many = await send('DELETE', `Patient?identifier=${encodeURIComponent(`${MRN}|cd-many`)}&_multiple=true`);
    expect(many.status).toBe(200);
    expect(((await many.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('Deleted 2');
  });

  it('resolves conditional references and conditional entries inside a transaction', async () => {
    await send('POST', 'Patient', patient('tx-ref-1'));
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: { resourceType: 'Observation', status: 'final', code: { text: 'glucose' }, subject: { reference: `Patient?identifier=${MRN}|tx-ref-1` } },
          request: { method: 'POST', url: 'Observation' },
        },
        {
          fullUrl: 'urn:uuid:enc-patient',
          resource: patient('tx-new-1', { active: true }),
          request: { method: 'PUT', url: `Patient?identifier=${MRN}|tx-new-1` },
        },
        {
          resource: {
            resourceType: 'Observation',
            identifier: [{ system: 'http://lab.example/obs', value: 'k-1' }],
            status: 'final',
            code: { text: 'k' },
            subject: { reference: 'urn:uuid:enc-patient' },
          },
          request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=http://lab.example/obs|k-1' },
        },
      ],
    };
    const res = await send('POST', '', bundle);
    const body = (await res.json()) as Bundle;
    expect(res.status, JSON.stringify(body)).toBe(200);
    const obs = body.entry?.[0].resource as Observation;
    const existing = (await (await fetch(`${base}/Patient?identifier=${encodeURIComponent(`${MRN}|tx-ref-1`)}`)).json()) as Bundle;
    expect(obs.subject?.reference).toBe(`Patient/${existing.entry?.[0].resource?.id}`);
    const newPatient = body.entry?.[1].resource as Patient;
    expect((body.entry?.[2].resource as Observation).subject?.reference).toBe(`Patient/${newPatient.id}`);

    // The same Bundle again: the conditional create matches (200, same Observation), the conditional update
    // changes nothing, so no resource gets a new version.
    const again = (await (await send('POST', '', bundle)).json()) as Bundle;
    expect(again.entry?.[2].response?.status).toBe('200 OK');
    expect(again.entry?.[2].resource?.id).toBe(body.entry?.[2].resource?.id);
    expect(again.entry?.[1].resource?.meta?.versionId).toBe(newPatient.meta?.versionId);

    // A conditional reference that matches nothing fails the whole transaction.
    const bad = await send('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient?identifier=${MRN}|nobody` } }, request: { method: 'POST', url: 'Observation' } }],
    });
    expect(bad.status).toBe(412);
    expect(((await bad.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('matched 0');
  });
});
