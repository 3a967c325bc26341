/**
 * A patient merge → ADT^A40 (merge patient – patient identifier list): MSH, EVN, PID of the survivor, MRG with
 * the prior record's identifiers (MRG-1) and name (MRG-7). The receiver (an EHR's ADT inbound, an MPI) merges
 * its own copies of the two records, so what was sent earlier under the prior identifier follows the survivor
 * there without Conflux resending every result and order (see triggers.ts: a merge's re-pointing sends nothing).
 *
 * The outbox row's group is the merged record ('Patient/<prior id>'); the survivor is the record its
 * `replaced-by` link names when the message is built.
 */
import type { Patient } from '@medplum/fhirtypes';
import type { Repository } from '../../../src/index.js';
import { FhirError } from '../../../src/index.js';
import { BuildError, type Built } from './build.js';
import { cx, identifierTypeCode, reps, ts, xpn } from './datatypes.js';
import type { Dialect } from './profiles.js';
import { msh, pickMrn, pid, segment } from './segments.js';

export interface MergeInput {
  survivor: Patient;
  merged: Patient;
  controlId: string;
  /** When the merge was recorded (EVN-2); defaults to the merged record's last update, else now. */
  at?: Date;
}

/** The outbox event of a merge; `family` 'adt' in triggers.ts. */
export const MERGE_EVENT = 'ADT:A40';

/** MRG-1 follows the dialect's PID-3 rule: the MRN alone (Epic matches on it) or every identifier. */
function priorIdentifiers(p: Patient, d: Dialect): string {
  const ids = (p.identifier ?? []).filter((i) => i.value);
  const mrn = pickMrn(ids, d);
  if (d.pid3 === 'mrn') return mrn ? cx(mrn, d, d.mrnTypeCode || undefined) : '';
  return reps(ids.map((i) => cx(i, d, identifierTypeCode(i) ?? (i === mrn && d.mrnTypeCode ? d.mrnTypeCode : undefined))));
}

export function buildA40(input: MergeInput, d: Dialect): string {
  const at = input.at ?? (input.merged.meta?.lastUpdated ? new Date(input.merged.meta.lastUpdated) : new Date());
  const recorded = ts(at.toISOString(), d);
  const segs = [msh(d, { code: 'ADT', trigger: 'A40', structure: 'ADT_A39', controlId: input.controlId, at: new Date() })];
  segs.push(segment('EVN', ['A40', recorded]));
  segs.push(pid(input.survivor, d));
  const mrg: string[] = new Array(7).fill('');
  mrg[0] = priorIdentifiers(input.merged, d);
  mrg[6] = reps((input.merged.name ?? []).map(xpn));
  if (!mrg[0]) throw new BuildError(`Patient/${input.merged.id} has no identifier to put in MRG-1; the receiver could not tell which record to merge`);
  segs.push(segment('MRG', mrg));
  return segs.join('\r');
}

async function readPatient(repo: Repository, ref: string, why: string): Promise<Patient> {
  const id = ref.startsWith('Patient/') ? ref.slice('Patient/'.length) : '';
  try {
    return await repo.readResource<Patient>('Patient', id);
  } catch (err) {
    if (err instanceof FhirError && (err.status === 404 || err.status === 410)) {
      throw new BuildError(`${ref} (${why}) ${err.status === 410 ? 'was deleted' : 'does not exist'}; nothing to send`);
    }
    throw err;
  }
}

/** From an outbox row ('ADT:A40', group 'Patient/<merged>') to the message, read from the committed records. */
export async function buildMergeMessage(repo: Repository, row: { event: string; groupKey: string }, d: Dialect, controlId: string): Promise<Built> {
  if (row.event !== MERGE_EVENT) throw new BuildError(`unknown ADT outbox event "${row.event}"`);
  const merged = await readPatient(repo, row.groupKey, 'the merged record');
  const into = merged.link?.find((l) => l.type === 'replaced-by')?.other?.reference;
  if (!into) throw new BuildError(`${row.groupKey} is no longer replaced-by another record (the merge was undone); nothing to send`);
  const survivor = await readPatient(repo, into, 'the surviving record');
  return { text: buildA40({ survivor, merged, controlId }, d), messageType: 'ADT^A40' };
}
