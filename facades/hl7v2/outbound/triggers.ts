/**
 * Which store changes become which messages (the repository change hook). Runs inside the writer's
 * transaction, so it only decides and inserts outbox rows; messages are built later by the worker from
 * the committed resources.
 *
 *  - DiagnosticReport in any result status (registered, preliminary, partial, final, corrected, amended,
 *    appended, a new cancelled one, unknown) → ORU, grouped on the report, to destinations taking that status.
 *  - Observation in any of those → ORU of the report that lists it (the whole report is resent,
 *    as receivers expect on a correction); an Observation no report lists → an ORU of its own.
 *  - ServiceRequest created/changed → ORM (NW, XO, CA, HD, RL, SC from the status transition).
 *  - Procedure based on a ServiceRequest entering in-progress/completed/not-done/stopped → ORM SC
 *    (the imaging procedure-step status message).
 *  - Observation/DiagnosticReport becoming entered-in-error or cancelled, or deleted → ORU withdrawal
 *    ('ORU:WITHDRAW'), but only to destinations that already took a message for it (decided by the hook,
 *    which knows the outbox; see withdrawal.ts).
 *  - Patient gaining a `replaced-by` link (a merge) → ADT^A40 ('ADT:A40', build-adt.ts) to destinations whose
 *    types include ADT; the merge's re-pointed results and orders send nothing of their own.
 */
import { matchesSearchRequest, type SearchRequest } from '@medplum/core';
import type { DiagnosticReport, Observation, Patient, Procedure, Reference, Resource, ServiceRequest } from '@medplum/fhirtypes';
import type { Tx } from '../../../src/index.js';
import type { ChangeEvent } from '../../../src/index.js';
import { searchIds } from '../../../src/index.js';
import { isMergeRepoint } from '../../../src/index.js';
import { compileFilter, RESULT_STATUSES as RESULT_STATUS_NAMES, statusesOf, type Destination, type MessageTypeName } from './destinations.js';

export interface OutboxEvent {
  /** 'ORU' | 'ORM:NW' | ... */
  event: string;
  /** Which destination types take it ('adt': a patient merge, to destinations whose types include ADT). */
  family: 'result' | 'order' | 'adt';
  groupKey: string;
  patientKey: string;
  /** Standalone-Observation rows this message makes redundant (a report's results). */
  carries?: string[];
  /** The triggering result's status: a destination takes only the statuses it lists (destinations.ts). */
  status?: string;
  /** The resource destination filters are evaluated on when it is not the changed one (a result's report). */
  filterOn?: Resource;
  /**
   * A withdrawal of something already sent: goes only to destinations that took a message for `groupKey`
   * (no filter applies: the receiver has the result, whatever its filter says now). `whole` when the
   * group's own resource (the report, or the standalone Observation) is withdrawn, not one of its results.
   */
  withdrawal?: { whole: boolean; reason: string };
}

/** Every status a result can be sent with (a destination narrows it); entered-in-error only ever withdraws. */
const RESULT_STATUSES: ReadonlySet<string> = new Set(RESULT_STATUS_NAMES);
/** Result statuses that take back what was sent (HL7 v2 OBX-11 W/D/X, OBR-25 X; see build-oru.ts). */
export const WITHDRAWN_STATUSES = new Set(['entered-in-error', 'cancelled']);
const PROCEDURE_STATUSES = new Set(['in-progress', 'completed', 'not-done', 'stopped']);

const patientOf = (subject: Reference | undefined, fallback: string): string => {
  const ref = subject?.reference;
  return ref && ref.startsWith('Patient/') ? ref : fallback;
};

/** Ignores meta (versionId, lastUpdated): a write that changed nothing else sends nothing. */
function sameContent(a: Resource | undefined, b: Resource | undefined): boolean {
  if (!a || !b) return false;
  const strip = (r: Resource) => JSON.stringify({ ...r, meta: undefined });
  return strip(a) === strip(b);
}

export function orderControl(now: ServiceRequest, before: ServiceRequest | undefined): string | undefined {
  if (!before || before.status === 'draft') {
    return now.status === 'active' || now.status === 'on-hold' ? 'NW' : undefined;
  }
  if (now.status === before.status) return now.status === 'active' || now.status === 'on-hold' ? 'XO' : undefined;
  switch (now.status) {
    case 'revoked':
    case 'entered-in-error':
      return 'CA';
    case 'on-hold':
      return 'HD';
    case 'active':
      return before.status === 'on-hold' ? 'RL' : 'XO';
    case 'completed':
      return 'SC';
    default:
      return undefined;
  }
}

/** The reports a transaction queued (by group key), for their results' events: filters apply to the report. */
const txReports = new WeakMap<Set<string>, Map<string, DiagnosticReport>>();
function reportsOf(inTx: Set<string>): Map<string, DiagnosticReport> {
  let m = txReports.get(inTx);
  if (!m) txReports.set(inTx, (m = new Map()));
  return m;
}

/**
 * What a change means for the outbox. Observation lookups need the transaction (the report may have
 * been written earlier in it); `inTx` remembers reports already queued by this transaction so that a
 * 20-OBX message costs one lookup, not twenty.
 */
export async function eventsFor(tx: Tx, change: ChangeEvent, inTx: Set<string>): Promise<OutboxEvent[]> {
  const withdrawal = await withdrawalEvents(tx, change);
  if (withdrawal) return withdrawal;
  const r = change.resource;
  if (!r || change.method === 'DELETE') return [];
  if (sameContent(r, change.previous)) return [];
  // A result already withdrawn (cancelled, entered-in-error) and rewritten as such: its withdrawal went out.
  const was = (change.previous as { status?: string } | undefined)?.status;
  if (was && WITHDRAWN_STATUSES.has(was) && WITHDRAWN_STATUSES.has((r as { status?: string }).status ?? '')) return [];
  // A patient merge re-points the prior record's results and orders to the survivor: receivers learn that once,
  // from the ADT^A40 (case 'Patient'), and merge their own copies; resending each under the survivor would
  // duplicate them there.
  if (change.previous && (await isMergeRepoint(tx, change.previous, r))) return [];
  switch (r.resourceType) {
    case 'Patient': {
      // Merged: the record gained a replaced-by link (the core's patient merge, or a FHIR client doing the same).
      const into = (p: Resource | undefined) => (p as Patient | undefined)?.link?.find((l) => l.type === 'replaced-by')?.other?.reference;
      const now = into(r);
      if (!now || into(change.previous) === now) return [];
      // The prior record's lane: whatever was queued for it before the merge reaches the receiver first.
      const key = `Patient/${r.id}`;
      return [{ event: 'ADT:A40', family: 'adt', groupKey: key, patientKey: key }];
    }
    case 'DiagnosticReport': {
      const dr = r as DiagnosticReport;
      if (!RESULT_STATUSES.has(dr.status)) return [];
      const key = `DiagnosticReport/${dr.id}`;
      for (const res of dr.result ?? []) if (res.reference) inTx.add(`${res.reference}=>${key}`);
      inTx.add(key);
      reportsOf(inTx).set(key, dr);
      // An Observation written before its report (earlier in this transaction, or earlier and not yet
      // sent) queued an ORU of its own; the report's ORU carries it, so that row must not go out too.
      const carries = (dr.result ?? []).map((x) => x.reference).filter((x): x is string => !!x && x.startsWith('Observation/'));
      return [{ event: 'ORU', family: 'result', groupKey: key, patientKey: patientOf(dr.subject, key), carries, status: dr.status }];
    }
    case 'Observation': {
      const obs = r as Observation;
      if (!RESULT_STATUSES.has(obs.status)) return [];
      const ref = `Observation/${obs.id}`;
      // Its report was queued by this transaction: that row carries it. The event still names the result's own
      // status, because a destination may take it (final) though not the report's (preliminary); the hook
      // enqueues it only where the report's event did not already land.
      const carriedBy = [...inTx].filter((k) => k.startsWith(`${ref}=>`)).map((k) => k.slice(ref.length + 2));
      if (carriedBy.length) {
        return carriedBy.map((key) => ({ event: 'ORU', family: 'result' as const, groupKey: key, patientKey: patientOf(obs.subject, key), carries: [ref], status: obs.status, filterOn: reportsOf(inTx).get(key) }));
      }
      const reports = await searchIds(tx, 'DiagnosticReport', [['result', ref]], 5);
      if (reports.length === 0) {
        return [{ event: 'ORU', family: 'result', groupKey: ref, patientKey: patientOf(obs.subject, ref), status: obs.status }];
      }
      // The report carries the patient lane; the observation's subject is the same patient.
      return reports.map((id) => ({ event: 'ORU', family: 'result' as const, groupKey: `DiagnosticReport/${id}`, patientKey: patientOf(obs.subject, `DiagnosticReport/${id}`), status: obs.status }));
    }
    case 'ServiceRequest': {
      const sr = r as ServiceRequest;
      const control = orderControl(sr, change.previous as ServiceRequest | undefined);
      if (!control) return [];
      const key = `ServiceRequest/${sr.id}`;
      return [{ event: `ORM:${control}`, family: 'order', groupKey: key, patientKey: patientOf(sr.subject, key) }];
    }
    case 'Procedure': {
      const p = r as Procedure;
      if (!PROCEDURE_STATUSES.has(p.status)) return [];
      if ((change.previous as Procedure | undefined)?.status === p.status) return [];
      if (!p.basedOn?.some((b) => b.reference?.startsWith('ServiceRequest/'))) return [];
      const key = `Procedure/${p.id}`;
      return [{ event: 'ORM:SC', family: 'order', groupKey: key, patientKey: patientOf(p.subject, key) }];
    }
  }
  return [];
}

/**
 * A result taken back: its status became entered-in-error/cancelled, or it was deleted. Undefined when
 * the change is no withdrawal (the normal rules apply). A resource that was already withdrawn (deleted
 * after entered-in-error) is not withdrawn twice.
 */
async function withdrawalEvents(tx: Tx, change: ChangeEvent): Promise<OutboxEvent[] | undefined> {
  if (change.resourceType !== 'Observation' && change.resourceType !== 'DiagnosticReport') return undefined;
  const before = change.previous as Observation | DiagnosticReport | undefined;
  if (!before || WITHDRAWN_STATUSES.has(before.status)) return undefined;
  let reason: string;
  if (change.method === 'DELETE') reason = 'deleted';
  else {
    const now = change.resource as Observation | DiagnosticReport | undefined;
    if (!now || !WITHDRAWN_STATUSES.has(now.status)) return undefined;
    reason = now.status;
  }
  const ref = `${change.resourceType}/${change.id}`;
  const own: OutboxEvent = { event: 'ORU:WITHDRAW', family: 'result', groupKey: ref, patientKey: patientOf(before.subject, ref), withdrawal: { whole: true, reason } };
  if (change.resourceType === 'DiagnosticReport') return [own];
  // An Observation went out inside the reports that list it (and perhaps on its own before a report
  // listed it): each of those messages is taken back. A deleted Observation's reports still list it.
  const reports = await searchIds(tx, 'DiagnosticReport', [['result', ref]], 5);
  return [
    own,
    ...reports.map((id) => ({
      event: 'ORU:WITHDRAW',
      family: 'result' as const,
      groupKey: `DiagnosticReport/${id}`,
      patientKey: patientOf(before.subject, `DiagnosticReport/${id}`),
      withdrawal: { whole: false, reason: `${ref} ${reason}` },
    })),
  ];
}

/** A destination with its filters compiled once (the hook runs on every write). */
export interface ActiveDestination {
  dest: Destination;
  filters: Map<string, SearchRequest[]>;
  /** The result statuses it takes. */
  statuses: Set<string>;
}

export function activate(dest: Destination): ActiveDestination {
  const filters = new Map<string, SearchRequest[]>();
  for (const f of dest.filter) {
    const req = compileFilter(f, dest.name);
    filters.set(req.resourceType, [...(filters.get(req.resourceType) ?? []), req]);
  }
  return { dest, filters, statuses: statusesOf(dest) };
}

/** HL7 table 0103: the inbound mapper tags resources that came from a message whose MSH-11 was not P. */
export const PROCESSING_ID_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v2-0103';

/** The MSH-11 of the HL7 v2 message a resource came from, when that was not production (T, D). */
export function sourceProcessingId(resource: Resource | undefined): string | undefined {
  const code = resource?.meta?.tag?.find((t) => t.system === PROCESSING_ID_SYSTEM)?.code?.toUpperCase();
  return code && code !== 'P' ? code : undefined;
}

export function wants(a: ActiveDestination, ev: OutboxEvent, resource: Resource): boolean {
  // Training/debugging data must not reach a production interface unless the destination asks for it.
  if (sourceProcessingId(resource) && a.dest.options.forwardNonProduction !== true) return false;
  const types: MessageTypeName[] = a.dest.types;
  if (ev.family === 'result' && !types.includes('ORU')) return false;
  if (ev.family === 'result' && ev.status && !a.statuses.has(ev.status)) return false;
  if (ev.family === 'order' && !types.includes('ORM') && !types.includes('OML')) return false;
  if (ev.family === 'adt' && !(types as readonly string[]).includes('ADT')) return false;
  // Criteria apply to the resource types they name; a type no criterion names passes.
  const criteria = a.filters.get(resource.resourceType);
  if (!criteria) return true;
  return criteria.some((c) => matchesSearchRequest(resource, c));
}
