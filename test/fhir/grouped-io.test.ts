/**
 * Lone reads and creates that arrive together share one statement (src/fhir/read-batch.ts, create-batch.ts). What
 * that must not change: each caller gets its own answer (its own resource, 404, 410), and a create fails only for
 * its own reason, never for a neighbour's in the same statement.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { Repository } from '../../src/fhir/repository.js';
import { FhirError } from '../../src/index.js';
import { testDatabases } from '../helpers/db.js';

describe.each(testDatabases())('grouped reads and creates on $name', (backend) => {
  let repo: Repository;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    const opened = await backend.open();
    drop = opened.drop;
    repo = new Repository(opened.db);
  });
  afterAll(async () => {
    await drop?.();
  });

  const status = (p: Promise<unknown>) => p.then(() => 200, (e: unknown) => (e instanceof FhirError ? e.status : 500));

  it('creates asked for at once are each stored as sent, under ids of their own', async () => {
    const sent = Array.from({ length: 40 }, (_, i) => ({ resourceType: 'Patient', name: [{ family: `Grouped-${i}` }], birthDate: `19${String(10 + i)}-01-01` }) as Patient);
    const made = await Promise.all(sent.map((p) => repo.create(p)));
    expect(new Set(made.map((m) => m.resource.id)).size).toBe(40);
    // Read back at once too: every answer is the resource asked for, not a neighbour's.
    const back = await Promise.all(made.map((m) => repo.readResource<Patient>('Patient', m.resource.id!)));
    back.forEach((p, i) => {
      expect(p.id).toBe(made[i].resource.id);
      expect(p.name?.[0]?.family).toBe(`Grouped-${i}`);
      expect(p.meta?.versionId).toBe('1');
    });
  });

  it('reads asked for at once answer each its own: found, unknown, deleted, and a type that shares the id', async () => {
    const live = await repo.create<Patient>({ resourceType: 'Patient', name: [{ family: 'Live' }] });
    const gone = await repo.create<Patient>({ resourceType: 'Patient', name: [{ family: 'Gone' }] });
    await repo.delete('Patient', gone.resource.id!);
    const obs = await repo.update<Observation>({ resourceType: 'Observation', id: live.resource.id, status: 'final', code: { text: 'same id, other type' } });
    const answers = await Promise.all([
      status(repo.read('Patient', live.resource.id!)),
      status(repo.read('Patient', 'never-stored')),
      status(repo.read('Patient', gone.resource.id!)),
      repo.readResource<Observation>('Observation', obs.resource.id!),
      repo.readResource<Patient>('Patient', live.resource.id!),
    ]);
    expect(answers.slice(0, 3)).toEqual([200, 404, 410]);
    expect((answers[3] as Observation).code?.text).toBe('same id, other type');
    expect((answers[4] as Patient).name?.[0]?.family).toBe('Live');
  });

  it('a create that fails in the shared statement fails alone: its neighbours are stored', async () => {
    // Two creates of one id at once cannot both succeed; the statement holding both fails as a whole.
    const same = { resourceType: 'Patient', name: [{ family: 'Twin' }] } as Patient;
    const outcomes = await Promise.allSettled([
      repo.create(same, { assignedId: 'grouped-twin' }),
      repo.create({ resourceType: 'Patient', name: [{ family: 'Bystander' }] } as Patient),
      repo.create(same, { assignedId: 'grouped-twin' }),
    ]);
    expect(outcomes[1].status).toBe('fulfilled');
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(2);
    const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(FhirError);
    expect((refused.reason as FhirError).status).toBe(409);
    const bystander = (outcomes[1] as PromiseFulfilledResult<{ resource: Patient }>).value.resource;
    expect((await repo.readResource<Patient>('Patient', bystander.id!)).name?.[0]?.family).toBe('Bystander');
    expect((await repo.readResource<Patient>('Patient', 'grouped-twin')).meta?.versionId).toBe('1');
  });
});
