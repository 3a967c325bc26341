/**
 * Patient–device association: which patient a device (optionally at a bed) was on at a given time.
 *
 * Patient safety (docs/design.md principle 5): a reading is filed to a patient only through an association
 * whose half-open window [start, end) covers the reading's own timestamp. Anything unclear — unknown
 * device, two devices answering one identifier, two patients covering one instant, a bed that
 * contradicts the device's association — resolves to "no association", and the caller holds the reading.
 *
 * The DeviceUseStatement written through the repository is the record; `device_association` is this
 * module's lookup mirror (one indexed query per reading instead of a FHIR search per reading).
 */
import type { DeviceUseStatement, Identifier } from '@medplum/fhirtypes';
import type { Queryable, Tx } from '../db/database.js';
import { FhirError, badRequest, conflict, notFound } from '../fhir/outcome.js';
import { Sql } from '../fhir/search/query.js';
import { deviceAuditEvent } from './audit.js';
import { bareId, normalizeIdentifiers } from './identifiers.js';
import type { Actor, DeviceStore } from './repo-port.js';

export const ASSOCIATION_LOCATION_EXTENSION = 'urn:conflux:extension:device-association-location';

export interface AssociationQuery {
  deviceIdentifiers: Identifier[];
  /** 'Location/<id>' or an identifier value of a registered bed (e.g. an HL7 PV1-3 such as `4E^408^1`). */
  location?: string;
}

export interface ResolvedAssociation {
  patient: `Patient/${string}`;
  device: `Device/${string}`;
}

export type AssociationExplanation =
  | (ResolvedAssociation & { ok: true; association: string; location?: `Location/${string}` })
  | { ok: false; reason: string; device?: `Device/${string}` };

interface AssociationRow {
  id: string;
  device_id: string;
  patient_id: string;
  location_id: string | null;
  period_start: Date | string;
  period_end: Date | string | null;
}

/** The association whose window covers `at`, or null when there is none or it is not unambiguous. */
export async function resolveAssociation(
  q: Queryable,
  query: AssociationQuery,
  at: Date,
): Promise<ResolvedAssociation | null> {
  const r = await explainAssociation(q, query, at);
  return r.ok ? { patient: r.patient, device: r.device } : null;
}

/** Like resolveAssociation, but says why nothing was found (the reason stored with a held reading). */
export async function explainAssociation(
  q: Queryable,
  query: AssociationQuery,
  at: Date,
): Promise<AssociationExplanation> {
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) return { ok: false, reason: 'reading has no valid timestamp' };
  const ids = normalizeIdentifiers(query.deviceIdentifiers);
  const devices = await findDeviceIds(q, ids);
  const locationIds = query.location ? await findLocationIds(q, query.location) : [];
  const when = at.toISOString();

  if (devices.length > 1) {
    return { ok: false, reason: `device identifiers ${fmtIds(ids)} match ${devices.length} devices (${devices.map((d) => `Device/${d}`).join(', ')})` };
  }
  if (devices.length === 1) {
    const device = `Device/${devices[0]}` as const;
    const rows = await coveringRows(q, 'device_id', devices[0], when);
    if (rows.length === 0) return { ok: false, device, reason: `${device} has no patient association at ${when}` };
    const patients = new Set(rows.map((r) => r.patient_id));
    if (patients.size > 1) return { ok: false, device, reason: `${device} has ${patients.size} overlapping associations at ${when}` };
    const row = rows[0];
    // A message that names a bed the device is not associated at is contradictory: hold, do not guess.
    if (row.location_id && locationIds.length > 0 && !locationIds.includes(row.location_id)) {
      return {
        ok: false,
        device,
        reason: `${device} is associated at Location/${row.location_id} but the reading names location "${query.location}"`,
      };
    }
    return found(row);
  }

  // No known device: the bed alone may identify the patient (PCD-01 with only PV1-3).
  if (!query.location) {
    return { ok: false, reason: ids.length ? `unknown device ${fmtIds(ids)}` : 'reading identifies neither a device nor a location' };
  }
  if (locationIds.length === 0) {
    return { ok: false, reason: `unknown device ${fmtIds(ids)} at unknown location "${query.location}"` };
  }
  if (locationIds.length > 1) return { ok: false, reason: `location "${query.location}" matches ${locationIds.length} locations` };
  const rows = await coveringRows(q, 'location_id', locationIds[0], when);
  if (rows.length === 0) return { ok: false, reason: `no patient association at Location/${locationIds[0]} at ${when}` };
  const patients = new Set(rows.map((r) => r.patient_id));
  if (patients.size > 1) {
    return { ok: false, reason: `Location/${locationIds[0]} has associations for ${patients.size} patients at ${when}` };
  }
  return found(rows[0]);
}

function found(row: AssociationRow): AssociationExplanation {
  return {
    ok: true,
    patient: `Patient/${row.patient_id}`,
    device: `Device/${row.device_id}`,
    association: `DeviceUseStatement/${row.id}`,
    ...(row.location_id ? { location: `Location/${row.location_id}` as const } : {}),
  };
}

async function coveringRows(q: Queryable, column: 'device_id' | 'location_id', value: string, when: string) {
  const res = await q.query<AssociationRow>(
    `SELECT id, device_id, patient_id, location_id, period_start, period_end FROM device_association
      WHERE ${column} = $1 AND period_start <= $2::timestamptz AND (period_end IS NULL OR period_end > $2::timestamptz)`,
    [value, when],
  );
  return res.rows;
}

function fmtIds(ids: Array<{ system: string; value: string }>): string {
  return ids.map((i) => (i.system ? `${i.system}|${i.value}` : i.value)).join(', ') || '(none)';
}

/** Device ids any of the identifiers point to. An identifier without a system matches any system. */
export async function findDeviceIds(q: Queryable, ids: Array<{ system: string; value: string }>): Promise<string[]> {
  if (ids.length === 0) return [];
  const found = new Set<string>();
  for (const id of ids) {
    const res = id.system
      ? await q.query<{ device_id: string }>('SELECT device_id FROM device_identifier WHERE system = $1 AND value = $2', [id.system, id.value])
      : await q.query<{ device_id: string }>('SELECT device_id FROM device_identifier WHERE value = $1', [id.value]);
    for (const r of res.rows) found.add(r.device_id);
  }
  return [...found];
}

/** 'Location/<id>' (if registered) or locations having that identifier value. */
export async function findLocationIds(q: Queryable, location: string): Promise<string[]> {
  const m = /^Location\/([A-Za-z0-9\-.]{1,64})$/.exec(location.trim());
  if (m) {
    // A Location id the caller spelled out is unambiguous, registered identifiers or not.
    return [m[1]];
  }
  const res = await q.query<{ location_id: string }>('SELECT DISTINCT location_id FROM location_identifier WHERE value = $1', [location.trim()]);
  return res.rows.map((r) => r.location_id);
}

// ───────────────────────────── operator actions ─────────────────────────────

export interface AssociationView {
  id: string;
  device: string;
  patient: string;
  location: string | null;
  start: string;
  end: string | null;
  createdBy: string;
  endedBy: string | null;
}

function view(r: FullRow): AssociationView {
  return {
    id: r.id,
    device: `Device/${r.device_id}`,
    patient: `Patient/${r.patient_id}`,
    location: r.location_id ? `Location/${r.location_id}` : null,
    start: new Date(r.period_start).toISOString(),
    end: r.period_end ? new Date(r.period_end).toISOString() : null,
    createdBy: r.created_by,
    endedBy: r.ended_by,
  };
}

/** What the operator actions need: the database and the repository-backed store. */
export type DeviceDeps = DeviceStore;

function parseTime(value: string | Date | undefined, what: string): Date {
  if (value === undefined) return new Date();
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) throw badRequest(`${what} "${String(value)}" is not an ISO 8601 date-time`);
  if (typeof value === 'string' && !/(Z|[+-]\d\d:?\d\d)$/i.test(value.trim())) {
    // A wall-clock time without an offset is ambiguous across servers and DST changes.
    throw badRequest(`${what} "${value}" needs a time zone (Z or ±hh:mm)`);
  }
  return d;
}

function toBadRequest(err: unknown): never {
  if (err instanceof FhirError) throw err;
  throw badRequest((err as Error).message);
}

/**
 * Opens an association of a device with a patient from `start` (default now). An open association of
 * the same device that began earlier is closed at `start` (re-association moves the device); an
 * association that would overlap an earlier closed window or begin before the open one is refused.
 */
export async function associate(
  deps: DeviceDeps,
  input: { device: string; patient: string; location?: string; start?: string | Date },
  actor: Actor,
): Promise<AssociationView> {
  let deviceId: string, patientId: string, locationId: string | undefined;
  try {
    deviceId = bareId(input.device, 'Device');
    patientId = bareId(input.patient, 'Patient');
    locationId = input.location ? bareId(input.location, 'Location') : undefined;
  } catch (err) {
    toBadRequest(err);
  }
  const start = parseTime(input.start, 'start');
  return deps.db.transaction(async (tx) => {
    await mustExist(deps, tx, 'Device', deviceId);
    await mustExist(deps, tx, 'Patient', patientId);
    if (locationId) await mustExist(deps, tx, 'Location', locationId);
    // One device's associations change one at a time, so two operators cannot open overlapping windows.
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`device-association:${deviceId}`]);

    const existing = await tx.query<FullRow>(
      `SELECT * FROM device_association WHERE device_id = $1 AND (period_end IS NULL OR period_end > $2::timestamptz)
        ORDER BY period_start`,
      [deviceId, start.toISOString()],
    );
    let toClose: FullRow | undefined;
    for (const row of existing.rows) {
      const rowStart = new Date(row.period_start);
      if (row.period_end === null && rowStart < start) {
        if (row.patient_id === patientId && (row.location_id ?? undefined) === locationId) return view(row); // already so
        toClose = row;
        continue;
      }
      throw conflict(
        `Device/${deviceId} is associated with Patient/${row.patient_id} from ${rowStart.toISOString()}` +
          `${row.period_end ? ` to ${new Date(row.period_end).toISOString()}` : ''} (DeviceUseStatement/${row.id}); ` +
          `an association starting ${start.toISOString()} would overlap it`,
      );
    }
    if (toClose) await closeAssociation(deps, tx, toClose, start, actor);

    const dus: DeviceUseStatement = {
      resourceType: 'DeviceUseStatement',
      status: 'active',
      subject: { reference: `Patient/${patientId}` },
      device: { reference: `Device/${deviceId}` },
      timingPeriod: { start: start.toISOString() },
      recordedOn: new Date().toISOString(),
      ...(locationId ? { extension: [{ url: ASSOCIATION_LOCATION_EXTENSION, valueReference: { reference: `Location/${locationId}` } }] } : {}),
    };
    const created = await deps.create(dus, tx);
    const row = await tx.query<FullRow>(
      `INSERT INTO device_association (id, device_id, patient_id, location_id, period_start, created_by)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [created.id, deviceId, patientId, locationId ?? null, start.toISOString(), actor.who],
    );
    await deps.create(
      deviceAuditEvent({
        action: 'C',
        subtype: 'associate',
        who: actor.who,
        what: [{ reference: `DeviceUseStatement/${created.id}` }, { reference: `Device/${deviceId}` }, { reference: `Patient/${patientId}` }],
        description: `Device/${deviceId} associated with Patient/${patientId} from ${start.toISOString()}${locationId ? ` at Location/${locationId}` : ''}`,
      }),
      tx,
    );
    return view(row.rows[0]);
  });
}

type FullRow = AssociationRow & { created_by: string; ended_by: string | null };

/** Ends the open association of a device at `end` (default now). */
export async function release(
  deps: DeviceDeps,
  input: { device: string; end?: string | Date },
  actor: Actor,
): Promise<AssociationView> {
  let deviceId: string;
  try {
    deviceId = bareId(input.device, 'Device');
  } catch (err) {
    toBadRequest(err);
  }
  const end = parseTime(input.end, 'end');
  return deps.db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`device-association:${deviceId}`]);
    const open = await tx.query<FullRow>('SELECT * FROM device_association WHERE device_id = $1 AND period_end IS NULL', [deviceId]);
    if (open.rows.length === 0) throw notFound(`Device/${deviceId} has no open association to release`);
    const row = open.rows[0];
    if (end <= new Date(row.period_start)) {
      throw badRequest(`end ${end.toISOString()} is not after the association's start ${new Date(row.period_start).toISOString()}`);
    }
    return closeAssociation(deps, tx, row, end, actor);
  });
}

async function closeAssociation(deps: DeviceDeps, tx: Tx, row: AssociationRow, end: Date, actor: Actor): Promise<AssociationView> {
  const updated = await tx.query<FullRow>('UPDATE device_association SET period_end = $2, ended_by = $3 WHERE id = $1 RETURNING *', [
    row.id,
    end.toISOString(),
    actor.who,
  ]);
  const dus = await deps.read<DeviceUseStatement>('DeviceUseStatement', row.id, tx);
  await deps.update<DeviceUseStatement>({ ...dus, status: 'completed', timingPeriod: { ...(dus.timingPeriod ?? {}), end: end.toISOString() } }, tx);
  await deps.create(
    deviceAuditEvent({
      action: 'U',
      subtype: 'release',
      who: actor.who,
      what: [{ reference: `DeviceUseStatement/${row.id}` }, { reference: `Device/${row.device_id}` }, { reference: `Patient/${row.patient_id}` }],
      description: `Device/${row.device_id} released from Patient/${row.patient_id} at ${end.toISOString()}`,
    }),
    tx,
  );
  return view(updated.rows[0]);
}

async function mustExist(deps: DeviceDeps, q: Queryable, type: 'Device' | 'Patient' | 'Location', id: string): Promise<void> {
  try {
    await deps.read(type, id, q);
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) throw notFound(`${type}/${id} does not exist`);
    throw err;
  }
}

/** Associations, newest first; filters combine with AND. `activeAt` keeps those covering that instant. */
export async function listAssociations(
  q: Queryable,
  filter: { device?: string; patient?: string; activeAt?: Date; limit?: number } = {},
): Promise<AssociationView[]> {
  const where: string[] = [];
  const sql = new Sql();
  if (filter.device) where.push(`device_id = ${sql.p(bareId(filter.device, 'Device'))}`);
  if (filter.patient) where.push(`patient_id = ${sql.p(bareId(filter.patient, 'Patient'))}`);
  if (filter.activeAt) {
    const at = sql.p(filter.activeAt.toISOString());
    where.push(`period_start <= ${at}::timestamptz AND (period_end IS NULL OR period_end > ${at}::timestamptz)`);
  }
  const limit = sql.p(Math.min(Math.max(filter.limit ?? 200, 1), 1000));
  const res = await q.query<FullRow>(
    `SELECT * FROM device_association ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY period_start DESC, id LIMIT ${limit}`,
    sql.params,
  );
  return res.rows.map(view);
}
