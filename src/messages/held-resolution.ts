/**
 * Resolving a message held for an identity conflict (its order number, accession, Study Instance UID or sample id
 * belongs to another patient). Only a person decides, through the admin API or CLI, and every decision is audited:
 *  - file-as-new: the message is filed for its own patient as new resources (the other patient's data stays as it is);
 *  - reject: the message is not filed; it stays in the log with the operator's reason.
 * Filing depends on the protocol, so each facade registers how it files a held message of its channel.
 */
import type { AuditEvent, AuditEventAgent } from '@medplum/fhirtypes';
import type { Database, Tx } from '../db/database.js';
import { badRequest, conflict, notFound } from '../fhir/outcome.js';
import type { Repository } from '../fhir/repository.js';
import { getMessage, updateMessage, type MessageRecord, type MessageSummary } from './message-log.js';

export type HeldAction = 'file-as-new' | 'reject';
export const HELD_ACTIONS: readonly HeldAction[] = ['file-as-new', 'reject'];

export interface FiledMessage {
  resourceRefs: string[];
  patientRefs: string[];
}

/** Files a held message of one channel in `tx`, conflicting identifiers as new resources of the message's patient. */
export type FileAsNew = (tx: Tx, message: MessageRecord) => Promise<FiledMessage>;

const fileAsNewByChannel = new Map<string, FileAsNew>();

/** Called by a facade at start for each channel whose held messages it can file. */
export function registerHeldFiling(channels: string[], fileAsNew: FileAsNew): void {
  for (const c of channels) fileAsNewByChannel.set(c, fileAsNew);
}

export async function resolveHeldMessage(
  deps: { db: Database; repo: Repository },
  id: string,
  input: { action: HeldAction; who: string; note?: string },
): Promise<MessageSummary> {
  if (!HELD_ACTIONS.includes(input.action)) throw badRequest(`action must be one of ${HELD_ACTIONS.join(', ')}; got ${JSON.stringify(input.action)}`);
  const note = input.note?.trim();
  if (input.action === 'reject' && !note) throw badRequest('rejecting a held message needs a note saying why');
  await deps.db.transaction(async (tx) => {
    const r = await tx.query<{ id: string }>("SELECT id FROM message_log WHERE id = $1 AND status = 'held' AND hold_kind = 'identity-conflict' FOR UPDATE", [id]);
    const message = r.rows[0] ? await getMessage(tx, id) : null;
    if (!message) {
      const m = await getMessage(tx, id);
      if (!m) throw notFound(`message ${id} not found`);
      throw conflict(
        m.status === 'held'
          ? `message ${id} is held waiting for a patient–device association, not for an identity conflict: associate the device or assign the held reading instead`
          : `message ${id} is not held (status ${m.status}${m.resolution ? `; ${m.resolution}` : ''})`,
      );
    }
    const stamp = `${input.action === 'reject' ? 'rejected' : 'filed as new'} by ${input.who} at ${new Date().toISOString()}${note ? `: ${note}` : ''}`;
    let filed: FiledMessage = { resourceRefs: [], patientRefs: message.patientRefs };
    if (input.action === 'file-as-new') {
      const file = fileAsNewByChannel.get(message.channel);
      if (!file) throw conflict(`messages of channel ${message.channel} cannot be filed as new; reject it, correct the source and resend`);
      filed = await file(tx, message);
      await updateMessage(tx, id, { status: 'processed', resolution: stamp, resourceRefs: filed.resourceRefs, patientRefs: filed.patientRefs });
    } else {
      await updateMessage(tx, id, { status: 'error', resolution: stamp });
    }
    await deps.repo.create(resolutionAudit(message, input.action, input.who, stamp, filed), { tx });
  });
  const after = await getMessage(deps.db, id);
  const { raw: _raw, ...summary } = after!;
  return summary;
}

function resolutionAudit(m: MessageRecord, action: HeldAction, who: string, description: string, filed: FiledMessage): AuditEvent {
  const agent: NonNullable<AuditEventAgent['who']> = /^[A-Za-z]+\/[A-Za-z0-9\-.]+$/.test(who) ? { reference: who } : { display: who };
  return {
    resourceType: 'AuditEvent',
    type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110', display: 'Patient Record' },
    subtype: [{ system: 'urn:conflux:audit:messages', code: `identity-conflict-${action}` }],
    action: action === 'reject' ? 'D' : 'C',
    recorded: new Date().toISOString(),
    outcome: '0',
    outcomeDesc: `${m.channel} message ${m.id} (${m.messageType ?? '?'} ${m.controlId ?? ''}) held for an identity conflict: ${description}`,
    agent: [{ who: agent, requestor: true }],
    source: { observer: { display: 'Conflux message log' } },
    entity: [
      { what: { display: `message ${m.id}` }, detail: [{ type: 'error', valueString: m.error ?? '' }] },
      ...[...new Set([...m.patientRefs, ...filed.patientRefs])].map((p) => ({ what: { reference: p } })),
      ...filed.resourceRefs.map((r) => ({ what: { reference: r } })),
    ],
  };
}
