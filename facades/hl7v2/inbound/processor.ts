/**
 * One received MLLP payload → deduplicate, map, guard, commit, acknowledge. Principles: one transaction per message
 * writes its raw bytes in the log, every resource it produces and its outcome, and the ACK is sent only after that
 * commit (a crash before it leaves nothing; the sender resends); a message that fails is logged raw with its error;
 * a resend of a processed message (same sender and MSH-10) is answered AA with nothing new; a device reading without
 * a patient is held, never guessed; an identifier of another patient's data refuses the message (held for review).
 */
import type { Bundle, Identifier, Reference } from '@medplum/fhirtypes';
import { randomUUID } from 'node:crypto';
import type { ConflictPolicy, Database, FiledMessage, IdentityConflict, MessagePatch, MessageRecord, MessageStatus, Queryable, Tx, WrittenEntry } from '../../../src/index.js';
import { ConfluxError, conflict, findDuplicate, notFound, getMessage, guardPatientIdentity, recordMessage, storableText, updateMessage } from '../../../src/index.js';
import { splitEnvelope } from '../envelope.js';
import { Hl7ParseError, Hl7v2Message, readDelimiters, Segment, type Delimiters } from '../message.js';
import { Hl7Segment, Hl7Context } from '@medplum/core';
import { acknowledgements, formatIssue, HL7_ERROR, Hl7DataError, Hl7RejectError, hl7Timestamp, refusalFor, type Hl7Issue } from './ack.js';
import { mapMessage } from './map-message.js';
import { textIntakeRefusal } from './text-intake.js';
import type { MappedMessage } from './mapped.js';
import type { MappingConfig } from './mapping-config.js';

export interface DevicePort {
  resolveAssociation(q: Database | Tx, query: { deviceIdentifiers: Identifier[]; location?: string }, at: Date): Promise<{ patient: string; device: string } | null>;
  holdForAssociation(
    tx: Tx,
    input: { source: 'hl7v2'; messageId?: string; deviceIdentifiers: Identifier[]; location?: string; at: Date; bundle: Bundle; reason: string },
  ): Promise<string>;
  explainAssociation?(q: Database | Tx, query: { deviceIdentifiers: Identifier[]; location?: string }, at: Date): Promise<{ ok: boolean; reason?: string }>;
}

export interface ProcessorDeps {
  db: Database;
  /** Writes a FHIR transaction Bundle's entries inside `tx` through the core's system write port; one result per entry. */
  transact(bundle: Bundle, tx: Tx): Promise<WrittenEntry[]>;
  mapping: () => MappingConfig;
  /** MLLP_MAX_SEGMENTS: a message with more segments is refused (AE) before it is mapped; unset, no limit. */
  maxSegments?: number;
  devices?: DevicePort;
  log: { info(m: string): void; warn(m: string): void; error(m: string): void };
  /** Test hook: runs after the resources are written, before commit (a crash there must not lose data). */
  beforeCommit?: (messageId: string) => Promise<void> | void;
  /** ADT merges (A40/A34/A39): the core's patient merge, bound to the repository, run in the message's transaction. */
  mergePatients?(tx: Tx, req: import('../../../src/index.js').PatientMergeRequest): Promise<import('../../../src/index.js').PatientMergeResult>;
}

export interface ProcessResult {
  /** Frames to send back, in order (none for an inbound ACK). */
  replies: string[];
  /** Log ids of the messages handled. */
  messageIds: string[];
}

export async function processPayload(deps: ProcessorDeps, payload: Buffer, meta: { remoteAddress?: string; channel?: string } = {}): Promise<ProcessResult> {
  const env = splitEnvelope(payload);
  const channel = meta.channel ?? 'mllp';
  const isBatch = env.batchHeader !== undefined || env.fileHeader !== undefined;
  if (env.problems.length > 0 || env.messages.length === 0) {
    // An envelope we cannot trust: nothing in it is processed; it is logged whole and answered with its defects.
    const header = headerSegment(env.batchHeader ?? env.fileHeader ?? env.messages[0]);
    const first = env.messages[0] ? safeParse(env.messages[0]) : undefined;
    const issues: Hl7Issue[] = env.problems.map((p) => ({ code: HL7_ERROR.segmentSequence, segment: header?.name ?? 'MSH', message: p }));
    const text = `batch envelope rejected: ${env.problems.join('; ')}`;
    const ack = acknowledgements(first, { code: 'AE', issues }, header ?? undefined);
    const id = await recordMessage(deps.db, {
      channel,
      direction: 'in',
      raw: payload,
      remoteAddress: meta.remoteAddress,
      sender: first?.sender ?? null,
      controlId: first?.controlId || null,
      messageType: isBatch ? 'BATCH' : (first?.messageType ?? null),
      status: 'error',
      error: text,
      ack: ack.join('\n'),
    });
    deps.log.warn(`rejected envelope from ${meta.remoteAddress ?? '?'}: ${text}`);
    return { replies: ack, messageIds: [id] };
  }
  const replies: string[] = [];
  const ids: string[] = [];
  for (const text of env.messages) {
    // A single message keeps its exact bytes (BOM, LF) in the log; batch members keep their own text.
    const raw = env.messages.length === 1 && !isBatch ? payload : Buffer.from(text, 'utf8');
    const r = await processMessage(deps, text, raw, { remoteAddress: meta.remoteAddress, channel, rawIsPayload: raw === payload });
    replies.push(...r.replies);
    if (r.id) ids.push(r.id);
  }
  if (isBatch) {
    const header = headerSegment(env.batchHeader ?? env.fileHeader!);
    return { replies: [wrapBatch(replies, header, env.fileHeader !== undefined)], messageIds: ids };
  }
  return { replies, messageIds: ids };
}

/** One message: log, dedupe, map, commit, acknowledge. Exported for replay. */
export async function processMessage(
  deps: ProcessorDeps,
  text: string,
  raw: Buffer,
  meta: { remoteAddress?: string; channel?: string; replayOf?: string; rawIsPayload?: boolean },
): Promise<{ replies: string[]; id?: string; status: string }> {
  const channel = meta.channel ?? 'mllp';
  let msg: Hl7v2Message;
  try {
    msg = Hl7v2Message.parse(text);
  } catch (e) {
    if (!(e instanceof Hl7ParseError)) throw e;
    const { code, issues } = refusalFor(e);
    const ack = acknowledgements(undefined, { code, issues }, headerSegment(text) ?? undefined);
    const id = await recordMessage(deps.db, { channel, direction: 'in', raw, remoteAddress: meta.remoteAddress, status: 'error', error: e.message, ack: ack.join('\n'), replayOf: meta.replayOf });
    return { replies: ack, id, status: 'error' };
  }
  // Never acknowledge an acknowledgement: log it and stay silent.
  if (msg.messageCode === 'ACK') {
    const id = await recordMessage(deps.db, { channel, direction: 'in', raw, remoteAddress: meta.remoteAddress, sender: msg.sender, controlId: msg.controlId || null, messageType: msg.messageType, version: msg.version, status: 'processed' });
    return { replies: [], id, status: 'processed' };
  }
  const controlId = msg.controlId;
  // Mapping is pure: done before the transaction, so the transaction holds its locks only while it writes.
  let mapped: MappedMessage | undefined;
  let refusal: { code: 'AE' | 'AR'; issues: Hl7Issue[] } | undefined;
  try {
    if (msg.defects.length) refusal = { code: 'AE', issues: msg.defects.map((d) => ({ code: HL7_ERROR.segmentSequence, message: d })) };
    else if ((refusal = textIntakeRefusal(msg, raw, meta.rawIsPayload ?? false))) mapped = undefined;
    else if (deps.maxSegments && msg.segments.length > deps.maxSegments) {
      // Thousands of results in one transaction exhaust the database's lock table and the process's memory.
      const message = `the message has ${msg.segments.length} segments; this server takes at most ${deps.maxSegments} in one message (MLLP_MAX_SEGMENTS): send it split, e.g. one message per order`;
      refusal = { code: 'AE', issues: [{ code: HL7_ERROR.applicationInternalError, segment: 'MSH', sequence: 1, message }] };
    }
    else mapped = mapMessage(msg, deps.mapping());
  } catch (e) {
    if (e instanceof Hl7RejectError || e instanceof Hl7DataError) refusal = refusalFor(e);
    else throw e;
  }

  let id: string = randomUUID();
  // An earlier attempt of this message that failed (mapping error, crash): this resend takes over its log row.
  let earlier = false;
  // One commit per message: the log row is written with what the message produced (or why it did not), in the
  // same transaction, and the ACK follows that commit. A crash before it leaves nothing; the sender resends.
  const logAs = async (q: Queryable, outcome: MessagePatch & { status: MessageStatus }) => {
    if (earlier) await updateMessage(q, id, { ...outcome, countAttempt: true });
    else await recordMessage(q, { ...base(msg, raw, meta), ...outcome, id });
  };
  const reply = (code: 'AE' | 'AR', issues: Hl7Issue[]) => acknowledgements(msg, { code, issues });

  try {
    return await deps.db.transaction(async (tx) => {
      if (controlId && !meta.replayOf) {
        // Copies of one message racing (a sender that timed out and resent on a new connection, two workers) take
        // turns on their sender and control id, so the second sees the first as a duplicate instead of filing again.
        await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [storableText(`hl7v2:${channel}:${msg.sender ?? ''}:${controlId}`)]);
        const dup = await findDuplicate(tx, msg.sender, controlId, { channel });
        if (dup && dup.status === 'held' && dup.holdKind === 'identity-conflict' && dup.ack) {
          // Still refused until an operator resolves it: the sender gets the same answer again, nothing is stored.
          await updateMessage(tx, dup.id, { countAttempt: true });
          return { replies: dup.ack.split('\n'), id: dup.id, status: dup.status };
        }
        if (dup && (dup.status === 'processed' || dup.status === 'held')) {
          await updateMessage(tx, dup.id, { countAttempt: true });
          const ack = acknowledgements(msg, { code: 'AA', issues: [], text: 'duplicate of an already processed message; nothing new stored' });
          return { replies: ack, id: dup.id, status: dup.status };
        }
        if (dup) {
          id = dup.id;
          earlier = true;
        }
      }
      if (refusal || !mapped) {
        const { code, issues } = refusal!;
        const ack = reply(code, issues);
        await logAs(tx, { status: 'error', error: issues.map(formatIssue).join('; '), ack: ack.join('\n') });
        return { replies: ack, id, status: 'error' };
      }

      let bundle = mapped.bundle;
      if (mapped.needsAssociation) {
        const need = mapped.needsAssociation;
        const found = deps.devices ? await deps.devices.resolveAssociation(tx, need, need.at) : null;
        if (found) {
          bundle = fileToPatient(bundle, found.patient);
        } else {
          const reason = deps.devices
            ? ((await deps.devices.explainAssociation?.(tx, need, need.at))?.reason ?? 'no patient–device association covers the reading time')
            : 'device reading without a patient identifier and no device association service available';
          const ack = acknowledgements(msg, { code: 'AA', issues: [], text: 'held: waiting for a patient-device association' });
          await logAs(tx, { status: 'held', holdKind: 'association', error: reason, ack: ack.join('\n') });
          if (deps.devices) {
            await deps.devices.holdForAssociation(tx, { source: 'hl7v2', messageId: id, deviceIdentifiers: need.deviceIdentifiers, location: need.location, at: need.at, bundle, reason });
          }
          deps.log.info(`held ${msg.messageType} ${controlId} from ${msg.sender}: ${reason}`);
          return { replies: ack, id, status: 'held' };
        }
      }

      // Principle 5: an order number (or visit, specimen id) of another patient refuses the message, before any write.
      const written = await writeMapped(deps, tx, msg, mapped, bundle, 'refuse');
      if ('conflicts' in written) {
        const issues = conflictIssues(written.conflicts, mapped);
        const nack = reply('AE', issues);
        await logAs(tx, {
          status: 'held',
          holdKind: 'identity-conflict',
          error: issues.map(formatIssue).join('; '),
          ack: nack.join('\n'),
          patientRefs: [...new Set(written.conflicts.map((c) => c.existingPatient))],
        });
        deps.log.warn(`held ${msg.messageType} ${controlId} from ${msg.sender}: identity conflict: ${issues.map(formatIssue).join('; ')}`);
        return { replies: nack, id, status: 'held' };
      }
      const ack = acknowledgements(msg, { code: 'AA', issues: [] });
      await logAs(tx, { status: 'processed', error: null, ack: ack.join('\n'), ...written });
      await deps.beforeCommit?.(id);
      return { replies: ack, id, status: 'processed' };
    });
  } catch (e) {
    // The transaction rolled back: the failure is logged on its own, with the raw bytes, and answered AE.
    const { code, issues } = refusalFor(e);
    deps.log.error(`${msg.messageType} ${controlId} from ${msg.sender}: ${(e as Error).message}`);
    const ack = reply(code, issues);
    await logAs(deps.db, { status: 'error', error: issues.map(formatIssue).join('; '), ack: ack.join('\n') });
    return { replies: ack, id, status: 'error' };
  }
}

/** One ERR per refused key (an OBR's report, results and specimen share one), naming the other patient by identifier only. */
function conflictIssues(conflicts: IdentityConflict[], mapped: MappedMessage): Hl7Issue[] {
  const seen = new Set<string>();
  const issues: Hl7Issue[] = [];
  for (const c of conflicts) {
    const origin = mapped.keyOrigins?.[c.entry];
    const where = origin ? `${origin.segment.name}#${origin.segment.sequence}-${origin.field}` : c.condition;
    if (seen.has(where)) continue;
    seen.add(where);
    const who = c.existingPatientIdentifiers.map(showIdentifier).join(', ') || c.existingPatient;
    const key = decodeURIComponent(c.condition.replace(/^identifier=/, '').split('|').pop() ?? c.condition);
    const what = origin ? `${origin.segment.name}-${origin.field} ${origin.what} ${origin.segment.raw(origin.field)}` : `${c.resourceType} identifier ${key}`;
    issues.push({
      code: HL7_ERROR.duplicateKeyIdentifier,
      segment: origin?.segment.name,
      sequence: origin?.segment.sequence,
      field: origin?.field,
      message: `${what} already belongs to another patient (${who}); refused and held for review, nothing was changed`,
    });
  }
  return issues;
}

function showIdentifier(i: Identifier): string {
  const type = i.type?.coding?.[0]?.code;
  return `${type ? `${type} ` : ''}${i.value ?? ''}${i.system ? ` (${i.system})` : ''}`;
}

/**
 * Files a message held for an identity conflict for its own patient, as new resources (an operator's decision,
 * see src/messages/held-resolution.ts): the same mapping as on receipt, the guard in file-as-new mode.
 */
export async function fileHeldAsNew(deps: ProcessorDeps, tx: Tx, message: MessageRecord): Promise<FiledMessage> {
  const env = splitEnvelope(message.raw);
  if (env.messages.length !== 1 || env.problems.length) throw conflict(`message ${message.id} is not a single HL7 v2 message`);
  const msg = Hl7v2Message.parse(env.messages[0]!);
  const mapped = mapMessage(msg, deps.mapping());
  let bundle = mapped.bundle;
  if (mapped.needsAssociation) {
    const need = mapped.needsAssociation;
    const found = deps.devices ? await deps.devices.resolveAssociation(tx, need, need.at) : null;
    if (!found) throw conflict(`message ${message.id} is a device reading without a patient and no association covers it`);
    bundle = fileToPatient(bundle, found.patient);
  }
  const written = await writeMapped(deps, tx, msg, mapped, bundle, 'file-as-new');
  if ('conflicts' in written) throw new Error('file-as-new reported conflicts'); // the guard files them as new instead
  return written;
}

/**
 * The one write step of a mapped message, on receipt and when an operator files a held one: the identity guard, the
 * FHIR transaction, ADT merges in the same transaction (the prior record's data moves with the links, or nothing
 * does), and what the log row records. Under 'refuse', conflicts come back instead and nothing is written.
 */
async function writeMapped(
  deps: ProcessorDeps,
  tx: Tx,
  msg: Hl7v2Message,
  mapped: MappedMessage,
  input: Bundle,
  policy: ConflictPolicy,
): Promise<FiledMessage | { conflicts: IdentityConflict[] }> {
  const guarded = await guardPatientIdentity(tx, input, policy);
  if (guarded.conflicts.length) return { conflicts: guarded.conflicts };
  const bundle = guarded.bundle;
  const refs = (await deps.transact(bundle, tx)).map((w) => w.reference);
  for (const m of mapped.merges ?? []) {
    if (!deps.mergePatients) throw new Error('patient merge is not available in this process; the merge was not applied');
    const ref = (fullUrl: string) => refs[bundle.entry!.findIndex((e) => e.fullUrl === fullUrl)] ?? fullUrl;
    await deps.mergePatients(tx, { source: ref(m.merged), target: ref(m.survivor), who: `HL7 v2 ${msg.sender}`, reason: `${msg.messageType} ${msg.controlId}` });
  }
  const patientRefs = refs.filter((r, i) => r.startsWith('Patient/') && (bundle.entry![i]?.fullUrl === mapped.patientRef || !mapped.patientRef));
  const fromSubject = bundle.entry?.map((e) => (e.resource as { subject?: Reference } | undefined)?.subject?.reference).find((r) => r?.startsWith('Patient/'));
  return { resourceRefs: refs, patientRefs: patientRefs.length ? patientRefs : fromSubject ? [fromSubject] : [] };
}

function base(msg: Hl7v2Message, raw: Buffer, meta: { remoteAddress?: string; channel?: string; replayOf?: string }) {
  return {
    channel: meta.channel ?? 'mllp',
    direction: 'in' as const,
    raw,
    sender: msg.sender,
    receiver: msg.receiver,
    remoteAddress: meta.remoteAddress ?? null,
    controlId: msg.controlId || null,
    messageType: msg.messageType || null,
    version: msg.version || null,
    replayOf: meta.replayOf ?? null,
  };
}

/** Sets the associated patient as subject of every reading in a device bundle. */
function fileToPatient(bundle: Bundle, patient: string): Bundle {
  const copy = structuredClone(bundle);
  for (const e of copy.entry ?? []) {
    const r = e.resource as { resourceType: string; subject?: Reference };
    if (['Observation', 'DiagnosticReport', 'Specimen'].includes(r.resourceType)) r.subject = { reference: patient };
  }
  return copy;
}

function safeParse(text: string): Hl7v2Message | undefined {
  try {
    return Hl7v2Message.parse(text);
  } catch {
    return undefined;
  }
}

/** The first line of a text (MSH, BHS or FHS) as a Segment, to address an ACK when the message is unusable. */
function headerSegment(text: string | undefined): Segment | undefined {
  if (!text) return undefined;
  const line = text.split(/\r\n|\r|\n/)[0] ?? '';
  if (!/^(MSH|BHS|FHS)/.test(line)) return undefined;
  let d: Delimiters;
  try {
    d = readDelimiters(line);
  } catch {
    return undefined;
  }
  const ctx = new Hl7Context('\r', d.field, d.component, d.repetition, d.escape, d.subcomponent);
  return new Segment(Hl7Segment.parse(line, ctx), d, 1);
}

/** A batch of ACKs (BHS … BTS, inside FHS … FTS when the input was a file), answering a batch. */
function wrapBatch(acks: string[], header: Segment | undefined, file: boolean): string {
  const f = header?.d.field ?? '|';
  const enc = header ? header.raw(2) : '^~\\&';
  const swap = (name: string) => [`${name}${f}${enc}`, header?.raw(5) ?? '', header?.raw(6) ?? '', header?.raw(3) ?? '', header?.raw(4) ?? '', hl7Timestamp(new Date())].join(f);
  const lines = [...(file ? [swap('FHS')] : []), swap('BHS'), ...acks, `BTS${f}${acks.length}`, ...(file ? [`FTS${f}1`] : [])];
  return lines.join('\r');
}

/** Re-runs a logged message (after a mapping or configuration fix) as a new log entry pointing at it. */
export async function replayMessage(deps: ProcessorDeps, id: string): Promise<{ id?: string; status: string; replies: string[] }> {
  const original = await getMessage(deps.db, id);
  if (!original) throw notFound(`message ${id} not found`);
  const env = splitEnvelope(original.raw);
  if (env.messages.length !== 1 || env.problems.length) {
    throw new ConfluxError('processing', `message ${id} holds ${env.messages.length} messages${env.problems.length ? ` and envelope defects (${env.problems.join('; ')})` : ''}; only single messages can be replayed`);
  }
  return processMessage(deps, env.messages[0]!, original.raw, { channel: original.channel, replayOf: original.replayOf ?? original.id, remoteAddress: 'replay', rawIsPayload: true });
}
