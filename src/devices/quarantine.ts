/**
 * Quarantine of readings that cannot be filed to a patient: no association covering the reading's
 * time, an ambiguous one, an implausible value, a timestamp in the future. The FHIR transaction
 * Bundle that would have been filed is kept whole; an operator files it to a chosen patient
 * (`assignHeld`, audited, atomically with the AuditEvent) or discards it (`discardHeld`, audited).
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, Identifier, Resource } from '@medplum/fhirtypes';
import type { Queryable, Tx } from '../db/database.js';
import { FhirError, badRequest, conflict, notFound } from '../fhir/outcome.js';
import { responseBundle, type WrittenEntry } from '../fhir/write.js';
import { explainAssociation } from './association.js';
import { deviceAuditEvent } from './audit.js';
import { bareId } from './identifiers.js';
import type { DeviceDeps } from './association.js';
import type { Actor } from './repo-port.js';

export interface HoldInput {
  source: 'hl7v2' | 'serial';
  /** The message log id (or MSH-10) of the transmission the reading came in. */
  messageId?: string;
  deviceIdentifiers: Identifier[];
  location?: string;
  /** The reading's own time (OBX-14 / R-record time), not the time it arrived. */
  at: Date;
  /** The transaction Bundle that would be filed, without a subject on Observation/DiagnosticReport. */
  bundle: Bundle;
  reason: string;
}

export interface HeldReading {
  id: string;
  source: 'hl7v2' | 'serial';
  messageId: string | null;
  deviceIdentifiers: Identifier[];
  location: string | null;
  at: string;
  reason: string;
  status: 'held' | 'assigned' | 'discarded';
  heldAt: string;
  resolvedAt: string | null;
  resolvedBy: string | null;
  patient: string | null;
  note: string | null;
  /** Short description of what is held: "Observation 8867-4 72 /min", one per Observation. */
  summary: string[];
  bundle?: Bundle;
  /** Whom an association made since the reading was held would point to; a hint, never applied by itself. */
  suggestedPatient?: string;
}

/** Resource types whose `subject` is the patient the reading is filed to. */
const SUBJECT_TYPES = new Set(['Observation', 'DiagnosticReport', 'Specimen', 'ServiceRequest', 'Procedure', 'Media']);

/** Keeps a reading for an operator; returns the held id. Runs in the caller's transaction. */
export async function holdForAssociation(tx: Tx, input: HoldInput): Promise<string> {
  if (!input.reason?.trim()) throw new Error('holdForAssociation needs a reason');
  if (input.bundle?.resourceType !== 'Bundle' || input.bundle.type !== 'transaction') {
    throw new Error('holdForAssociation needs a FHIR transaction Bundle');
  }
  const at = input.at instanceof Date && !Number.isNaN(input.at.getTime()) ? input.at : new Date(0);
  const bundleJson = JSON.stringify(input.bundle);
  const hash = createHash('sha256').update(bundleJson).digest('hex');
  // A retransmitted reading (same bundle) that is still waiting is not queued a second time.
  const same = await tx.query<{ id: string }>(`SELECT id FROM held_reading WHERE bundle_hash = $1 AND status = 'held' LIMIT 1`, [hash]);
  if (same.rows[0]) return same.rows[0].id;
  const id = randomUUID();
  await tx.query(
    `INSERT INTO held_reading (id, source, message_id, device_identifiers, location, reading_at, bundle, reason, bundle_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      id,
      input.source,
      input.messageId ?? null,
      JSON.stringify(input.deviceIdentifiers ?? []),
      input.location ?? null,
      at.toISOString(),
      bundleJson,
      input.reason,
      hash,
    ],
  );
  return id;
}

interface HeldRow {
  id: string;
  source: 'hl7v2' | 'serial';
  message_id: string | null;
  device_identifiers: Identifier[] | string;
  location: string | null;
  reading_at: Date | string;
  bundle: Bundle | string;
  reason: string;
  status: 'held' | 'assigned' | 'discarded';
  held_at: Date | string;
  resolved_at: Date | string | null;
  resolved_by: string | null;
  patient_id: string | null;
  resolution_note: string | null;
}

const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);
const iso = (v: Date | string) => new Date(v).toISOString();

function toView(r: HeldRow, withBundle: boolean): HeldReading {
  const bundle = json<Bundle>(r.bundle);
  return {
    id: r.id,
    source: r.source,
    messageId: r.message_id,
    deviceIdentifiers: json<Identifier[]>(r.device_identifiers),
    location: r.location,
    at: iso(r.reading_at),
    reason: r.reason,
    status: r.status,
    heldAt: iso(r.held_at),
    resolvedAt: r.resolved_at ? iso(r.resolved_at) : null,
    resolvedBy: r.resolved_by,
    patient: r.patient_id ? `Patient/${r.patient_id}` : null,
    note: r.resolution_note,
    summary: summarize(bundle),
    ...(withBundle ? { bundle } : {}),
  };
}

function summarize(bundle: Bundle): string[] {
  const out: string[] = [];
  for (const e of bundle.entry ?? []) {
    const r = e.resource;
    if (r?.resourceType !== 'Observation') continue;
    const code = r.code?.coding?.[0]?.code ?? r.code?.text ?? '?';
    const value =
      r.valueQuantity !== undefined
        ? `${r.valueQuantity.value ?? ''} ${r.valueQuantity.unit ?? r.valueQuantity.code ?? ''}`.trim()
        : (r.valueString ?? r.valueCodeableConcept?.text ?? r.valueCodeableConcept?.coding?.[0]?.code ?? '');
    out.push(`Observation ${code} ${value}`.trim());
  }
  return out;
}

/** Held readings, oldest first (the queue an operator works through). */
export async function listHeld(
  q: Queryable,
  filter: { status?: 'held' | 'assigned' | 'discarded' | 'all'; limit?: number; withBundle?: boolean; suggest?: boolean } = {},
): Promise<HeldReading[]> {
  const status = filter.status ?? 'held';
  const limit = Math.min(Math.max(filter.limit ?? 100, 1), 1000);
  const res =
    status === 'all'
      ? await q.query<HeldRow>('SELECT * FROM held_reading ORDER BY held_at, id LIMIT $1', [limit])
      : await q.query<HeldRow>('SELECT * FROM held_reading WHERE status = $1 ORDER BY held_at, id LIMIT $2', [status, limit]);
  const views = res.rows.map((r) => toView(r, filter.withBundle ?? false));
  if (filter.suggest ?? true) {
    for (const v of views) {
      if (v.status !== 'held') continue;
      const e = await explainAssociation(q, { deviceIdentifiers: v.deviceIdentifiers, location: v.location ?? undefined }, new Date(v.at));
      if (e.ok) v.suggestedPatient = e.patient;
    }
  }
  return views;
}

export async function getHeld(q: Queryable, id: string): Promise<HeldReading> {
  const res = await q.query<HeldRow>('SELECT * FROM held_reading WHERE id = $1', [id]);
  if (!res.rows[0]) throw notFound(`held reading ${id} does not exist`);
  return toView(res.rows[0], true);
}

/** Counts per status, for dashboards and `device list`. */
export async function countHeld(q: Queryable): Promise<Record<'held' | 'assigned' | 'discarded', number>> {
  const res = await q.query<{ status: string; n: string | number }>('SELECT status, count(*) AS n FROM held_reading GROUP BY status');
  const out = { held: 0, assigned: 0, discarded: 0 };
  for (const r of res.rows) out[r.status as keyof typeof out] = Number(r.n);
  return out;
}

/** The held bundle with `subject` set to the patient and the AuditEvent of the assignment appended. */
export function bundleForPatient(bundle: Bundle, patient: string, audit: Resource): Bundle {
  const entries: BundleEntry[] = (bundle.entry ?? []).map((e) => {
    const r = e.resource as (Resource & { subject?: { reference?: string } }) | undefined;
    if (!r || !SUBJECT_TYPES.has(r.resourceType)) return e;
    if (r.subject?.reference && r.subject.reference !== patient) {
      throw conflict(`held ${r.resourceType} already names subject ${r.subject.reference}, not ${patient}`);
    }
    return { ...e, resource: { ...r, subject: { reference: patient } } as Resource };
  });
  entries.push({ fullUrl: `urn:uuid:${randomUUID()}`, resource: audit, request: { method: 'POST', url: 'AuditEvent' } });
  return { ...bundle, entry: entries };
}

/**
 * Files a held reading to the patient the operator chose. The claim (status → assigned) is taken
 * first so two operators cannot file one reading twice; if filing fails the reading goes back to held.
 */
export async function assignHeld(
  deps: DeviceDeps,
  id: string,
  input: { patient: string; note?: string },
  actor: Actor,
): Promise<{ held: HeldReading; filed: WrittenEntry[]; response: Bundle }> {
  let patientId: string;
  try {
    patientId = bareId(input.patient, 'Patient');
  } catch (err) {
    throw badRequest((err as Error).message);
  }
  try {
    await deps.read('Patient', patientId);
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) throw notFound(`Patient/${patientId} does not exist`);
    throw err;
  }
  const patient = `Patient/${patientId}`;
  // Claim, file and audit in one transaction: a second operator blocks on the row and then finds it assigned.
  return deps.db.transaction(async (tx) => {
    const claimed = await tx.query<HeldRow>(
      `UPDATE held_reading SET status = 'assigned', resolved_at = now(), resolved_by = $2, patient_id = $3, resolution_note = $4
        WHERE id = $1 AND status = 'held' RETURNING *`,
      [id, actor.who, patientId, input.note ?? null],
    );
    const row = claimed.rows[0];
    if (!row) {
      await getHeld(tx, id); // 404 when it does not exist
      throw conflict(`held reading ${id} is no longer held`);
    }
    const audit = deviceAuditEvent({
      action: 'C',
      subtype: 'assign-held',
      who: actor.who,
      what: [{ reference: patient }, { display: `held reading ${id}` }],
      description:
        `held ${row.source} reading of ${iso(row.reading_at)} (${row.reason}) filed to ${patient}` + (input.note ? `: ${input.note}` : ''),
    });
    const filed = await deps.transaction(bundleForPatient(json<Bundle>(row.bundle), patient, audit).entry ?? [], tx);
    // The admin API answered with the transaction-response Bundle before the typed write port existed; it still does.
    return { held: toView(row, false), filed, response: responseBundle(filed) };
  });
}

/** Marks a held reading as not to be filed (wrong device, test transmission), audited. */
export async function discardHeld(deps: DeviceDeps, id: string, input: { note: string }, actor: Actor): Promise<HeldReading> {
  if (!input.note?.trim()) throw badRequest('discarding a held reading needs a note saying why');
  return deps.db.transaction(async (tx) => {
  const res = await tx.query<HeldRow>(
    `UPDATE held_reading SET status = 'discarded', resolved_at = now(), resolved_by = $2, resolution_note = $3
      WHERE id = $1 AND status = 'held' RETURNING *`,
    [id, actor.who, input.note],
  );
  if (!res.rows[0]) {
    await getHeld(tx, id);
    throw conflict(`held reading ${id} is no longer held`);
  }
  await deps.create(
    deviceAuditEvent({
      action: 'D',
      subtype: 'discard-held',
      who: actor.who,
      what: [{ display: `held reading ${id}` }],
      description: `held ${res.rows[0].source} reading of ${iso(res.rows[0].reading_at)} discarded: ${input.note}`,
    }),
    tx,
  );
  return toView(res.rows[0], false);
  });
}
