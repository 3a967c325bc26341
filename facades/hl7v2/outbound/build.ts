/**
 * From an outbox row to message text: reads the committed resources the row names and hands them to the
 * ORU or order builder with the destination's dialect. A resource that is gone is a build error (the row
 * becomes a dead letter naming it), not a crash of the worker.
 */
import type { DiagnosticReport, Encounter, Observation, Patient, Procedure, Reference, Resource, ServiceRequest } from '@medplum/fhirtypes';
import type { Repository } from '../../../src/index.js';
import { FhirError } from '../../../src/index.js';
import { buildMergeMessage } from './build-adt.js';
import { buildOrder, type OrderControl } from './build-orm.js';
import { buildOru, type Withdrawal } from './build-oru.js';
import type { Dialect } from './profiles.js';
import { sourceProcessingId } from './triggers.js';
import { ConfluxError } from '../../../src/index.js';

export class BuildError extends ConfluxError {
  constructor(message: string) {
    super('outbound-build', message);
  }
}

export interface Built {
  text: string;
  messageType: string;
}

async function read<T extends Resource>(repo: Repository, ref: string, why: string): Promise<T> {
  const [type, id] = ref.split('/');
  try {
    return await repo.readResource<T>(type!, id!);
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) {
      throw new BuildError(`${ref} (${why}) ${err.status === 410 ? 'was deleted' : 'does not exist'}; nothing to send`);
    }
    throw err;
  }
}

async function readOptional<T extends Resource>(repo: Repository, ref: Reference | undefined, type: string): Promise<T | undefined> {
  const r = ref?.reference;
  if (!r || !r.startsWith(`${type}/`)) return undefined;
  try {
    return await repo.readResource<T>(type, r.slice(type.length + 1));
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) return undefined;
    throw err;
  }
}

/** The report's results in one round trip, in the report's order. */
async function readMany<T extends Resource>(repo: Repository, type: string, refs: Reference[]): Promise<T[]> {
  const ids = refs.map((r) => r.reference).filter((r): r is string => !!r && r.startsWith(`${type}/`)).map((r) => r.slice(type.length + 1));
  return repo.readMany<T>(type, ids);
}

/** ORU^R01 taking back a report or result already sent: OBR-25 / OBX-11 per build-oru.ts withdrawalCodes. */
async function buildWithdrawal(repo: Repository, groupKey: string, d: Dialect, controlId: string): Promise<Built> {
  const [type, id] = groupKey.split('/') as [string, string];
  if (type !== 'DiagnosticReport' && type !== 'Observation') throw new BuildError(`${groupKey}: only reports and results are withdrawn`);
  const group = (await repo.readLatest<DiagnosticReport | Observation>(type, [id])).get(id);
  if (!group) throw new BuildError(`${groupKey} (the result to withdraw) does not exist; nothing to send`);
  let report: DiagnosticReport | undefined;
  let observations: Observation[];
  const withdrawal: Withdrawal = { groupDeleted: group.deleted, deletedResults: new Set() };
  if (type === 'DiagnosticReport') {
    report = group.resource as DiagnosticReport;
    const ids = (report.result ?? []).map((r) => r.reference).filter((r): r is string => !!r?.startsWith('Observation/')).map((r) => r.slice('Observation/'.length));
    const found = await repo.readLatest<Observation>('Observation', ids);
    observations = ids.flatMap((x) => {
      const f = found.get(x);
      if (f?.deleted) withdrawal.deletedResults.add(x);
      return f ? [f.resource] : [];
    });
  } else {
    observations = [group.resource as Observation];
  }
  const dialect = withSourceProcessingId(d, [report, ...observations], groupKey);
  const subject = report?.subject ?? observations[0]?.subject;
  const patient = await readOptional<Patient>(repo, subject, 'Patient');
  const enc = await readOptional<Encounter>(repo, report?.encounter ?? observations[0]?.encounter, 'Encounter');
  return { text: buildOru({ report, observations, patient, encounter: enc, controlId, withdrawal }, dialect), messageType: 'ORU^R01' };
}

const PROCESSING_NAMES: Record<string, string> = { T: 'training', D: 'debugging' };

/**
 * MSH-11 must not claim production for data that came in as training or debugging (inbound MSH-11 T/D,
 * kept as a meta.tag): such a message carries the source's processing id, and only to a destination
 * that opted in. The hook already skips non-production triggers; this catches a production report that
 * lists a non-production result.
 */
function withSourceProcessingId(d: Dialect, resources: Array<Resource | undefined>, what: string): Dialect {
  const pid = resources.map(sourceProcessingId).find((x) => x !== undefined);
  if (!pid) return d;
  if (!d.forwardNonProduction) {
    throw new BuildError(`${what} holds data from an HL7 v2 message with MSH-11 ${pid} (${PROCESSING_NAMES[pid] ?? 'non-production'}); this destination does not take non-production data (options.forwardNonProduction)`);
  }
  return { ...d, processingId: pid };
}

/**
 * `statuses`: the result statuses the destination takes; a report's results in other statuses are left out of
 * its ORU (a finals-only receiver gets the final OBX of a report whose other results are still preliminary).
 * Withdrawals carry every result: the receiver must see what it is asked to take back.
 */
export async function buildMessage(repo: Repository, row: { event: string; groupKey: string }, d: Dialect, controlId: string, statuses?: ReadonlySet<string>): Promise<Built> {
  const [family, control] = row.event.split(':');
  if (family === 'ADT') return buildMergeMessage(repo, row, d, controlId);
  if (family === 'ORU' && control === 'WITHDRAW') return buildWithdrawal(repo, row.groupKey, d, controlId);
  if (family === 'ORU') {
    let report: DiagnosticReport | undefined;
    let observations: Observation[];
    let subject: Reference | undefined;
    let encounter: Reference | undefined;
    if (row.groupKey.startsWith('DiagnosticReport/')) {
      report = await read<DiagnosticReport>(repo, row.groupKey, 'the report to send');
      observations = await readMany<Observation>(repo, 'Observation', report.result ?? []);
      subject = report.subject;
      encounter = report.encounter;
    } else {
      const o = await read<Observation>(repo, row.groupKey, 'the result to send');
      observations = [o];
      subject = o.subject;
      encounter = o.encounter;
    }
    if (statuses) observations = observations.filter((o) => statuses.has(o.status));
    // A report without results still goes (ORU_R01's OBX are optional): OBR-25 `I` "specimen in lab", or a
    // report whose OBR came alone. Unless the destination takes neither the report's status nor any result.
    if (observations.length === 0 && !report?.presentedForm?.length && !(report && (!statuses || statuses.has(report.status)))) {
      throw new BuildError(`${row.groupKey} has no results this destination takes (statuses ${[...(statuses ?? [])].join(', ') || 'any'})`);
    }
    const dialect = withSourceProcessingId(d, [report, ...observations], row.groupKey);
    const patient = await readOptional<Patient>(repo, subject, 'Patient');
    const enc = await readOptional<Encounter>(repo, encounter, 'Encounter');
    return { text: buildOru({ report, observations, patient, encounter: enc, controlId }, dialect), messageType: 'ORU^R01' };
  }
  if (family === 'ORM') {
    let order: ServiceRequest;
    let procedure: Procedure | undefined;
    if (row.groupKey.startsWith('Procedure/')) {
      procedure = await read<Procedure>(repo, row.groupKey, 'the procedure step');
      const basedOn = procedure.basedOn?.find((b) => b.reference?.startsWith('ServiceRequest/'));
      if (!basedOn?.reference) throw new BuildError(`${row.groupKey} is based on no ServiceRequest; the status cannot be filed to an order`);
      order = await read<ServiceRequest>(repo, basedOn.reference, 'the order of the procedure step');
    } else {
      order = await read<ServiceRequest>(repo, row.groupKey, 'the order to send');
    }
    const dialect = withSourceProcessingId(d, [order, procedure], row.groupKey);
    const patient = await readOptional<Patient>(repo, procedure?.subject ?? order.subject, 'Patient');
    const enc = await readOptional<Encounter>(repo, order.encounter, 'Encounter');
    const text = buildOrder({ order, procedure, control: (control ?? 'NW') as OrderControl, patient, encounter: enc, controlId }, dialect);
    return { text, messageType: d.orderMessage === 'OML' ? 'OML^O21' : 'ORM^O01' };
  }
  throw new BuildError(`unknown outbox event "${row.event}"`);
}

/** A replayed payload gets a new MSH-10; everything else stays byte for byte. */
export function withControlId(text: string, controlId: string): string {
  const end = text.indexOf('\r');
  const mshLine = end === -1 ? text : text.slice(0, end);
  const f = mshLine[3] ?? '|';
  const fields = mshLine.split(f);
  // fields[0] = 'MSH', fields[1] = MSH-2, so MSH-n is fields[n - 1].
  while (fields.length < 10) fields.push('');
  fields[9] = controlId;
  return fields.join(f) + (end === -1 ? '' : text.slice(end));
}
