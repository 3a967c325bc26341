/**
 * The core's system write port (src/fhir/write.ts): entries in, typed results out, run exactly as a transaction
 * or batch Bundle POSTed to /fhir is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BundleEntry, Observation, Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../../src/config.js';
import { FhirError, type Runtime } from '../../src/index.js';
import { createRuntime } from '../../src/runtime.js';
import { testDatabases } from '../helpers/db.js';

const PATIENT_URN = 'urn:uuid:0c8e6c1a-0000-4000-8000-000000000001';

describe.each(testDatabases())('system write port on $name', (backend) => {
  let rt: Runtime;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    const opened = await backend.open();
    drop = opened.drop;
    rt = await createRuntime(await loadConfig({ AUTH: 'off', PORT: '0' }), { db: opened.db });
  });
  afterAll(async () => {
    await rt?.close();
    await drop?.();
  });

  const entries = (mrn: string, value: number): BundleEntry[] => [
    {
      fullUrl: PATIENT_URN,
      resource: { resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: mrn }] },
      request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=urn:mrn|${mrn}` },
    },
    {
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'k' }, subject: { reference: PATIENT_URN }, identifier: [{ system: 'urn:obs', value: mrn }], valueQuantity: { value } },
      request: { method: 'PUT', url: `Observation?identifier=urn:obs|${mrn}` },
    },
  ];

  it('a transaction answers each entry with its id, version, status and what it did', async () => {
    const first = await rt.write.transaction({ actor: 'test', entries: entries('W-1', 1) });
    expect(first).toEqual([
      expect.objectContaining({ ok: true, status: 201, action: 'created', resourceType: 'Patient', versionId: '1' }),
      expect.objectContaining({ ok: true, status: 201, action: 'created', resourceType: 'Observation', versionId: '1' }),
    ]);
    expect(first[0]!.reference).toBe(`Patient/${first[0]!.id}`);
    const obs = await rt.repo.readResource<Observation>('Observation', first[1]!.id);
    expect(obs.subject?.reference).toBe(first[0]!.reference);

    const again = await rt.write.transaction({ actor: 'test', entries: entries('W-1', 2) });
    expect(again[0]).toMatchObject({ status: 200, action: 'matched', id: first[0]!.id, versionId: '1' });
    expect(again[1]).toMatchObject({ status: 200, action: 'updated', id: first[1]!.id, versionId: '2' });
  });

  it("commits with the caller's transaction, and rolls back with it", async () => {
    await expect(
      rt.db.transaction(async (tx) => {
        await rt.write.transaction({ actor: 'test', entries: entries('W-2', 1), tx });
        throw new Error('caller fails after the write');
      }),
    ).rejects.toThrow('caller fails after the write');
    const ids = await rt.db.query(`SELECT id FROM resource WHERE resource_type = 'Patient' AND content LIKE '%W-2%'`);
    expect(ids.rows).toHaveLength(0);
  });

  it('a failed transaction entry throws an OperationOutcome naming the entry, and writes nothing', async () => {
    const bad: BundleEntry[] = [
      { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: 'W-3' }] } as Patient, request: { method: 'POST', url: 'Patient' } },
      { resource: { resourceType: 'Observation', status: 'not-a-status', code: { text: 'k' } } as unknown as Observation, request: { method: 'POST', url: 'Observation' } },
    ];
    const err = await rt.write.transaction({ actor: 'test', entries: bad }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirError);
    expect((err as FhirError).status).toBe(400);
    expect((err as FhirError).outcome.issue?.[0]?.diagnostics).toMatch(/^Bundle\.entry\[1\]: /);
    const ids = await rt.db.query(`SELECT id FROM resource WHERE resource_type = 'Patient' AND content LIKE '%W-3%'`);
    expect(ids.rows).toHaveLength(0);
  });

  it('a batch answers a failed entry with its outcome and still writes the others', async () => {
    const out = await rt.write.batch({
      actor: 'test',
      entries: [
        { resource: { resourceType: 'Observation', status: 'bogus', code: { text: 'k' } } as unknown as Observation, request: { method: 'POST', url: 'Observation' } },
        { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: 'W-4' }] }, request: { method: 'POST', url: 'Patient' } },
      ],
    });
    expect(out[0]).toMatchObject({ ok: false, status: 400, outcome: { resourceType: 'OperationOutcome' } });
    expect(out[1]).toMatchObject({ ok: true, status: 201, action: 'created', resourceType: 'Patient' });
  });

  it('refuses reads and deletes, which have no version to report', async () => {
    await expect(rt.write.transaction({ actor: 'test', entries: [{ request: { method: 'DELETE', url: 'Patient/x' } }] })).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/POST, PUT or PATCH entries, not DELETE/),
    });
  });
});
