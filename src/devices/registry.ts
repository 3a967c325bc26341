/**
 * Known devices and beds. The Device / Location resources are written through the repository; the
 * registry tables mirror their identifiers so a reading's device or bed is found with one query.
 */
import type { Device, Identifier, Location } from '@medplum/fhirtypes';
import type { Queryable } from '../db/database.js';
import { badRequest, conflict } from '../fhir/outcome.js';
import type { DeviceDeps } from './association.js';
import { deviceAuditEvent } from './audit.js';
import { EUI64_SYSTEM, SERIAL_NUMBER_SYSTEM, SERIAL_PORT_SYSTEM, normalizeIdentifiers } from './identifiers.js';
import type { Actor } from './repo-port.js';

export interface AddDeviceInput {
  name: string;
  serialNumber?: string;
  /** 16 hex digits, with or without separators; stored upper-case without separators. */
  eui64?: string;
  /** Serial port path the device is attached to (e.g. /dev/ttyUSB0). */
  port?: string;
  manufacturer?: string;
  model?: string;
  /** Any further identifiers (e.g. the instrument id an analyzer sends in its ASTM H record). */
  identifiers?: Identifier[];
}

export interface DeviceView {
  id: string;
  reference: string;
  name: string;
  identifiers: Array<{ system: string; value: string }>;
  association: { patient: string; location: string | null; start: string; id: string } | null;
  createdAt: string;
}

export function normalizeEui64(value: string): string {
  const hex = value.replace(/[-:\s]/g, '').toUpperCase();
  if (!/^[0-9A-F]{16}$/.test(hex)) throw badRequest(`EUI-64 "${value}" is not 16 hexadecimal digits`);
  return hex;
}

export function deviceIdentifiersOf(input: AddDeviceInput): Identifier[] {
  const ids: Identifier[] = [];
  if (input.serialNumber?.trim()) ids.push({ system: SERIAL_NUMBER_SYSTEM, value: input.serialNumber.trim() });
  if (input.eui64?.trim()) ids.push({ system: EUI64_SYSTEM, value: normalizeEui64(input.eui64) });
  if (input.port?.trim()) ids.push({ system: SERIAL_PORT_SYSTEM, value: input.port.trim() });
  for (const id of input.identifiers ?? []) ids.push(id);
  return ids;
}

/** Registers a Device. Refuses identifiers already registered to another device (they must stay unique). */
export async function addDevice(deps: DeviceDeps, input: AddDeviceInput, actor: Actor): Promise<DeviceView> {
  if (!input.name?.trim()) throw badRequest('a device needs a name');
  const identifiers = deviceIdentifiersOf(input);
  const ids = normalizeIdentifiers(identifiers);
  if (ids.length === 0) throw badRequest('a device needs at least one identifier (serialNumber, eui64, port or identifiers)');
  for (const id of ids) {
    const taken = await deps.db.query<{ device_id: string }>('SELECT device_id FROM device_identifier WHERE system = $1 AND value = $2', [
      id.system,
      id.value,
    ]);
    if (taken.rows[0]) throw conflict(`identifier ${id.system}|${id.value} already belongs to Device/${taken.rows[0].device_id}`);
  }
  const device: Device = {
    resourceType: 'Device',
    status: 'active',
    identifier: ids.map((i) => ({ ...(i.system ? { system: i.system } : {}), value: i.value })),
    deviceName: [{ name: input.name.trim(), type: 'user-friendly-name' }],
    ...(input.serialNumber ? { serialNumber: input.serialNumber.trim() } : {}),
    ...(input.manufacturer ? { manufacturer: input.manufacturer } : {}),
    ...(input.model ? { modelNumber: input.model } : {}),
  };
  return deps.db.transaction(async (tx) => {
    const created = await deps.create(device, tx);
    const id = created.id as string;
    await tx.query('INSERT INTO device_registry (device_id, name) VALUES ($1, $2)', [id, input.name.trim()]);
    for (const i of ids) {
      await tx.query('INSERT INTO device_identifier (system, value, device_id) VALUES ($1, $2, $3)', [i.system, i.value, id]);
    }
    await deps.create(
      deviceAuditEvent({ action: 'C', subtype: 'device-add', who: actor.who, what: [{ reference: `Device/${id}` }], description: `Device/${id} "${input.name}" registered` }),
      tx,
    );
    return (await listDevices(tx, { device: id }))[0];
  });
}

/** Devices with their identifiers and the association open now. */
export async function listDevices(q: Queryable, filter: { device?: string } = {}): Promise<DeviceView[]> {
  const res = await q.query<{ device_id: string; name: string; created_at: Date | string }>(
    filter.device
      ? 'SELECT device_id, name, created_at FROM device_registry WHERE device_id = $1'
      : 'SELECT device_id, name, created_at FROM device_registry ORDER BY name, device_id',
    filter.device ? [filter.device] : [],
  );
  const out: DeviceView[] = [];
  for (const r of res.rows) {
    const ids = await q.query<{ system: string; value: string }>(
      'SELECT system, value FROM device_identifier WHERE device_id = $1 ORDER BY system, value',
      [r.device_id],
    );
    const assoc = await q.query<{ id: string; patient_id: string; location_id: string | null; period_start: Date | string }>(
      `SELECT id, patient_id, location_id, period_start FROM device_association
        WHERE device_id = $1 AND period_start <= now() AND (period_end IS NULL OR period_end > now())
        ORDER BY period_start DESC LIMIT 1`,
      [r.device_id],
    );
    const a = assoc.rows[0];
    out.push({
      id: r.device_id,
      reference: `Device/${r.device_id}`,
      name: r.name,
      identifiers: ids.rows,
      association: a
        ? { id: `DeviceUseStatement/${a.id}`, patient: `Patient/${a.patient_id}`, location: a.location_id ? `Location/${a.location_id}` : null, start: new Date(a.period_start).toISOString() }
        : null,
      createdAt: new Date(r.created_at).toISOString(),
    });
  }
  return out;
}

export interface AddLocationInput {
  name: string;
  /** Codes a message may name the bed by, e.g. the HL7 PV1-3 `4E^408^1` or `ICU-BED-3`. */
  identifiers?: Identifier[];
  /** 'bd' bed (default), 'ro' room, 'wa' ward. */
  physicalType?: 'bd' | 'ro' | 'wa';
}

export async function addLocation(deps: DeviceDeps, input: AddLocationInput, actor: Actor): Promise<{ id: string; reference: string; name: string; identifiers: Array<{ system: string; value: string }> }> {
  if (!input.name?.trim()) throw badRequest('a location needs a name');
  const ids = normalizeIdentifiers(input.identifiers);
  for (const id of ids) {
    const taken = await deps.db.query<{ location_id: string }>('SELECT location_id FROM location_identifier WHERE system = $1 AND value = $2', [id.system, id.value]);
    if (taken.rows[0]) throw conflict(`identifier ${id.system}|${id.value} already belongs to Location/${taken.rows[0].location_id}`);
  }
  const physicalType = input.physicalType ?? 'bd';
  const location: Location = {
    resourceType: 'Location',
    status: 'active',
    name: input.name.trim(),
    mode: 'instance',
    identifier: ids.map((i) => ({ ...(i.system ? { system: i.system } : {}), value: i.value })),
    physicalType: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/location-physical-type', code: physicalType }] },
  };
  return deps.db.transaction(async (tx) => {
    const created = await deps.create(location, tx);
    const id = created.id as string;
    await tx.query('INSERT INTO location_registry (location_id, name) VALUES ($1, $2)', [id, input.name.trim()]);
    for (const i of ids) {
      await tx.query('INSERT INTO location_identifier (system, value, location_id) VALUES ($1, $2, $3)', [i.system, i.value, id]);
    }
    await deps.create(
      deviceAuditEvent({ action: 'C', subtype: 'location-add', who: actor.who, what: [{ reference: `Location/${id}` }], description: `Location/${id} "${input.name}" registered` }),
      tx,
    );
    return { id, reference: `Location/${id}`, name: input.name.trim(), identifiers: ids };
  });
}

export async function listLocations(q: Queryable): Promise<Array<{ id: string; reference: string; name: string; identifiers: Array<{ system: string; value: string }> }>> {
  const res = await q.query<{ location_id: string; name: string }>('SELECT location_id, name FROM location_registry ORDER BY name, location_id');
  const out = [];
  for (const r of res.rows) {
    const ids = await q.query<{ system: string; value: string }>('SELECT system, value FROM location_identifier WHERE location_id = $1 ORDER BY system, value', [r.location_id]);
    out.push({ id: r.location_id, reference: `Location/${r.location_id}`, name: r.name, identifiers: ids.rows });
  }
  return out;
}
