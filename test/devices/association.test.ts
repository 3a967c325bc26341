import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, DeviceUseStatement } from '@medplum/fhirtypes';
import {
  addDevice,
  addLocation,
  associate,
  explainAssociation,
  listAssociations,
  listDevices,
  release,
  resolveAssociation,
  SERIAL_NUMBER_SYSTEM,
} from '../../src/devices/index.js';
import { FhirError } from '../../src/fhir/outcome.js';
import { databases, openTestEnv, type TestEnv } from './helpers.js';

const who = { who: 'Practitioner/op1' };

describe.each(databases)('patient–device association (%s)', (kind) => {
  let env: TestEnv;
  let alice: string, bob: string, device: string, monitor: string, bed: string;

  beforeAll(async () => {
    env = await openTestEnv(kind);
    alice = await env.patient('Alice');
    bob = await env.patient('Bob');
    device = (await addDevice(env.store, { name: 'SpO2 monitor', serialNumber: 'SN-1', eui64: '00-09-FB-01-02-03-04-05' }, who)).reference;
    monitor = (await addDevice(env.store, { name: 'bedside monitor', port: '/dev/ttyS9' }, who)).reference;
    bed = (await addLocation(env.store, { name: 'ICU bed 3', identifiers: [{ value: 'ICU^^3' }] }, who)).reference;
  }, 60_000);
  afterAll(async () => env?.close());

  const byDevice = { deviceIdentifiers: [{ system: SERIAL_NUMBER_SYSTEM, value: 'SN-1' }] };

  it('files a reading only inside the association window [start, end)', async () => {
    await associate(env.store, { device, patient: alice, start: '2024-01-01T08:00:00Z' }, who);
    await release(env.store, { device, end: '2024-01-01T12:00:00Z' }, who);
    const at = (s: string) => resolveAssociation(env.db, byDevice, new Date(s));
    expect(await at('2024-01-01T07:59:59Z')).toBeNull(); // before
    expect(await at('2024-01-01T08:00:00Z')).toEqual({ patient: alice, device });
    expect(await at('2024-01-01T11:59:59Z')).toEqual({ patient: alice, device }); // during
    expect(await at('2024-01-01T12:00:00Z')).toBeNull(); // after (end is exclusive)
    const why = await explainAssociation(env.db, byDevice, new Date('2024-01-01T13:00:00Z'));
    expect(why).toMatchObject({ ok: false, device, reason: expect.stringContaining('has no patient association at 2024-01-01T13:00:00.000Z') });
  });

  it('matches by EUI-64 and by a bare identifier value, and refuses unknown devices', async () => {
    const t = new Date('2024-01-01T09:00:00Z');
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [{ system: 'urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680', value: '0009FB0102030405' }] }, t)).toEqual({ patient: alice, device });
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [{ value: 'SN-1' }] }, t)).toEqual({ patient: alice, device });
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [{ value: 'SN-unknown' }] }, t)).toBeNull();
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [] }, t)).toBeNull();
  });

  it('re-association closes the open window at the new start and refuses overlaps', async () => {
    await associate(env.store, { device, patient: alice, start: '2024-02-01T08:00:00Z' }, who);
    const moved = await associate(env.store, { device, patient: bob, start: '2024-02-01T10:00:00Z' }, who);
    expect(moved).toMatchObject({ patient: bob, start: '2024-02-01T10:00:00.000Z', end: null });
    const at = (s: string) => resolveAssociation(env.db, byDevice, new Date(s));
    expect(await at('2024-02-01T09:59:00Z')).toEqual({ patient: alice, device });
    expect(await at('2024-02-01T10:00:00Z')).toEqual({ patient: bob, device });
    // An association reaching back into Alice's closed window (or before Bob's start) is refused.
    await expect(associate(env.store, { device, patient: alice, start: '2024-02-01T09:00:00Z' }, who)).rejects.toMatchObject({ status: 409 });
    await expect(associate(env.store, { device, patient: alice, start: '2024-01-01T11:00:00Z' }, who)).rejects.toMatchObject({ status: 409 });
    // The FHIR record: Alice's DeviceUseStatement is completed at Bob's start, Bob's active.
    const rows = await listAssociations(env.db, { device });
    const aliceRow = rows.find((r) => r.patient === alice && r.start === '2024-02-01T08:00:00.000Z')!;
    const dus = await env.store.read<DeviceUseStatement>('DeviceUseStatement', aliceRow.id);
    expect(dus.status).toBe('completed');
    expect(dus.timingPeriod).toEqual({ start: '2024-02-01T08:00:00.000Z', end: '2024-02-01T10:00:00.000Z' });
    expect((await listDevices(env.db, { device: device.slice(7) }))[0].association?.patient).toBe(bob);
    await release(env.store, { device, end: '2024-02-02T00:00:00Z' }, who);
  });

  it('every association change writes an AuditEvent naming who', async () => {
    const r = await env.db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'AuditEvent'`);
    const events = r.rows.map((x) => JSON.parse(x.content));
    const codes = events.map((e) => e.subtype[0].code);
    expect(codes.filter((c) => c === 'associate').length).toBeGreaterThanOrEqual(3);
    expect(codes.filter((c) => c === 'release').length).toBeGreaterThanOrEqual(3);
    expect(events.every((e) => e.agent[0].who.reference === 'Practitioner/op1')).toBe(true);
  });

  it('resolves a bed when the device is unknown, and holds when bed and device disagree', async () => {
    await associate(env.store, { device: monitor, patient: bob, location: bed, start: '2024-03-01T00:00:00Z' }, who);
    const t = new Date('2024-03-01T01:00:00Z');
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [], location: 'ICU^^3' }, t)).toEqual({ patient: bob, device: monitor });
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [{ value: 'unknown-eui' }], location: bed }, t)).toEqual({ patient: bob, device: monitor });
    expect(await resolveAssociation(env.db, { deviceIdentifiers: [], location: 'ICU^^4' }, t)).toBeNull();
    // The device's association is at bed 3; a message claiming another registered bed is contradictory.
    const bed4 = (await addLocation(env.store, { name: 'ICU bed 4', identifiers: [{ value: 'ICU^^4' }] }, who)).reference;
    const why = await explainAssociation(env.db, { deviceIdentifiers: [{ value: '/dev/ttyS9' }], location: bed4 }, t);
    expect(why).toMatchObject({ ok: false, reason: expect.stringContaining('is associated at') });
  });

  it('rejects bad input with a message naming what is wrong', async () => {
    await expect(associate(env.store, { device, patient: 'Patient/nope', start: '2025-01-01T00:00:00Z' }, who)).rejects.toThrow('Patient/nope does not exist');
    await expect(associate(env.store, { device, patient: alice, start: '2025-01-01T00:00:00' }, who)).rejects.toThrow('needs a time zone');
    await expect(associate(env.store, { device: 'Patient/1', patient: alice }, who)).rejects.toThrow('a Device was expected');
    await expect(release(env.store, { device }, who)).rejects.toBeInstanceOf(FhirError);
    await expect(addDevice(env.store, { name: 'dup', serialNumber: 'SN-1' }, who)).rejects.toThrow('already belongs to');
  });

  it('the transaction adapter files a Bundle through the repository', async () => {
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ fullUrl: 'urn:uuid:1b0c7b4e-0000-4000-8000-000000000001', resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' } }, request: { method: 'POST', url: 'Observation' } }],
    };
    const [written] = await env.store.transaction(bundle.entry!);
    expect(written).toMatchObject({ ok: true, status: 201, action: 'created', resourceType: 'Observation', versionId: '1' });
    expect((await env.rt.repo.readResource('Observation', written!.id)).resourceType).toBe('Observation');
  });
});
