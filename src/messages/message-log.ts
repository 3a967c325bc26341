/**
 * The message log shared by every facade (HL7 v2 over MLLP, serial/ASTM, ...): each message is kept
 * raw with its sender, control id, type, status, error, the acknowledgement sent and the resources it
 * produced, so that nothing is dropped silently and an operator can search and replay.
 *
 * Functions take a `Queryable` so that a caller can write the log row in the same transaction as the
 * data it describes, or on its own.
 */
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../db/database.js';
import { notFound } from '../fhir/outcome.js';
import { Sql } from '../fhir/search/query.js';

export type MessageStatus = 'received' | 'processed' | 'error' | 'held';
export type MessageDirection = 'in' | 'out';
/** Why a message is held: waiting for a patient–device association, or refused for an identity conflict. */
export type HoldKind = 'association' | 'identity-conflict';
export const MESSAGE_STATUSES: readonly MessageStatus[] = ['received', 'processed', 'error', 'held'];

export interface NewMessage {
  /** Chosen by the caller when it must name the row before writing it (one transaction for row and data). */
  id?: string;
  channel: string;
  direction: MessageDirection;
  raw: Uint8Array | string;
  sender?: string | null;
  receiver?: string | null;
  remoteAddress?: string | null;
  controlId?: string | null;
  messageType?: string | null;
  version?: string | null;
  status?: MessageStatus;
  error?: string | null;
  ack?: string | null;
  resourceRefs?: string[];
  patientRefs?: string[];
  replayOf?: string | null;
  receivedAt?: Date;
  holdKind?: HoldKind | null;
}

export interface MessagePatch {
  status?: MessageStatus;
  error?: string | null;
  ack?: string | null;
  resourceRefs?: string[];
  patientRefs?: string[];
  messageType?: string | null;
  controlId?: string | null;
  sender?: string | null;
  processedAt?: Date | null;
  holdKind?: HoldKind | null;
  /** What an operator decided about a held message, and who. */
  resolution?: string | null;
  /** Adds one to the attempt counter (a resend of a message that was never processed). */
  countAttempt?: boolean;
}

/** A log entry without its raw bytes (what lists return). */
export interface MessageSummary {
  id: string;
  seq: number;
  channel: string;
  direction: MessageDirection;
  sender: string | null;
  receiver: string | null;
  remoteAddress: string | null;
  controlId: string | null;
  messageType: string | null;
  version: string | null;
  status: MessageStatus;
  error: string | null;
  ack: string | null;
  resourceRefs: string[];
  patientRefs: string[];
  replayOf: string | null;
  holdKind: HoldKind | null;
  resolution: string | null;
  attempts: number;
  receivedAt: string;
  processedAt: string | null;
  updatedAt: string;
}

export interface MessageRecord extends MessageSummary {
  raw: Buffer;
}

export interface MessageFilter {
  channel?: string;
  direction?: MessageDirection;
  status?: MessageStatus | MessageStatus[];
  /** 'ORU' matches every ORU; 'ORU^R01' matches that trigger (and 'ORU^R01^ORU_R01'). */
  type?: string;
  controlId?: string;
  sender?: string;
  /** 'Patient/<id>' (or a bare id). */
  patient?: string;
  holdKind?: HoldKind;
  since?: Date;
  until?: Date;
  /** Keyset paging: entries with seq below this (lists are newest first). */
  beforeSeq?: number;
  limit?: number;
}

const SUMMARY_COLUMNS = `id, seq, channel, direction, sender, receiver, remote_address, control_id, message_type, version,
  status, error, ack, resource_refs, patient_refs, replay_of, hold_kind, resolution, attempts, received_at, processed_at, updated_at`;

/**
 * A value for a text column. PostgreSQL text cannot hold U+0000: a NUL byte in a sender's MSH field would make the
 * message's own log row (and so its ACK) fail, and the sender would resend it forever. It is stored as U+2400 (␀);
 * the raw bytes are kept exactly in `raw`.
 */
export function storableText<T extends string | null | undefined>(v: T): T {
  return (typeof v === 'string' && v.includes('\u0000') ? v.replace(/\u0000/g, '\u2400') : v) as T;
}

export async function recordMessage(q: Queryable, m: NewMessage): Promise<string> {
  const id = m.id ?? randomUUID();
  const raw = typeof m.raw === 'string' ? Buffer.from(m.raw, 'utf8') : Buffer.from(m.raw.buffer, m.raw.byteOffset, m.raw.byteLength);
  await q.query(
    `INSERT INTO message_log (id, channel, direction, sender, receiver, remote_address, control_id, message_type, version,
       status, error, ack, raw, resource_refs, patient_refs, replay_of, received_at, processed_at, hold_kind)
     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)`,
    [
      id,
      m.channel,
      m.direction,
      storableText(m.sender ?? null),
      storableText(m.receiver ?? null),
      storableText(m.remoteAddress ?? null),
      storableText(m.controlId ?? null),
      storableText(m.messageType ?? null),
      storableText(m.version ?? null),
      m.status ?? 'received',
      storableText(m.error ?? null),
      storableText(m.ack ?? null),
      raw,
      m.resourceRefs ?? [],
      m.patientRefs ?? [],
      m.replayOf ?? null,
      (m.receivedAt ?? new Date()).toISOString(),
      m.status && m.status !== 'received' ? new Date().toISOString() : null,
      m.holdKind ?? null,
    ],
  );
  return id;
}

export async function updateMessage(q: Queryable, id: string, patch: MessagePatch): Promise<void> {
  const sets: string[] = [];
  const sql = new Sql();
  const set = (col: string, value: unknown) => sets.push(`${col} = ${sql.p(typeof value === 'string' ? storableText(value) : value)}`);
  if (patch.status !== undefined) {
    set('status', patch.status);
    if (patch.processedAt === undefined && patch.status !== 'received') set('processed_at', new Date().toISOString());
  }
  if (patch.error !== undefined) set('error', patch.error);
  if (patch.ack !== undefined) set('ack', patch.ack);
  if (patch.resourceRefs !== undefined) set('resource_refs', patch.resourceRefs);
  if (patch.patientRefs !== undefined) set('patient_refs', patch.patientRefs);
  if (patch.messageType !== undefined) set('message_type', patch.messageType);
  if (patch.controlId !== undefined) set('control_id', patch.controlId);
  if (patch.sender !== undefined) set('sender', patch.sender);
  if (patch.processedAt !== undefined) set('processed_at', patch.processedAt ? patch.processedAt.toISOString() : null);
  if (patch.holdKind !== undefined) set('hold_kind', patch.holdKind);
  if (patch.resolution !== undefined) set('resolution', patch.resolution);
  if (patch.countAttempt) sets.push('attempts = attempts + 1');
  sets.push('updated_at = now()');
  const res = await q.query(`UPDATE message_log SET ${sets.join(', ')} WHERE id = ${sql.p(id)}`, sql.params);
  if (res.rowCount === 0) throw notFound(`message ${id} not found in the message log`);
}

/**
 * The earlier message with the same sender and control id on this channel (inbound by default), if any.
 * Prefers one that was fully handled (processed or held), since that decides whether a resend is a
 * duplicate; otherwise returns the latest attempt (received or error) so that the caller can reuse it.
 */
export async function findDuplicate(
  q: Queryable,
  sender: string | null,
  controlId: string,
  opts: { channel?: string; direction?: MessageDirection } = {},
): Promise<MessageSummary | null> {
  // `sender IS NOT DISTINCT FROM $3` would read like one statement but no index can answer it: every lookup
  // would scan the channel's whole log. Two texts keep it an index lookup however large the log grows.
  const res = await q.query<Row>(
    `SELECT ${SUMMARY_COLUMNS} FROM message_log
      WHERE channel = $1 AND direction = $2 AND ${sender === null ? 'sender IS NULL AND control_id = $3' : 'sender = $3 AND control_id = $4'}
        AND replay_of IS NULL
      ORDER BY (status IN ('processed', 'held')) DESC, seq DESC LIMIT 1`,
    sender === null ? [opts.channel ?? 'mllp', opts.direction ?? 'in', storableText(controlId)] : [opts.channel ?? 'mllp', opts.direction ?? 'in', storableText(sender), storableText(controlId)],
  );
  return res.rows[0] ? toSummary(res.rows[0]) : null;
}

export async function getMessage(q: Queryable, id: string): Promise<MessageRecord | null> {
  const res = await q.query<Row & { raw: Uint8Array }>(`SELECT ${SUMMARY_COLUMNS}, raw FROM message_log WHERE id = $1`, [id]);
  const row = res.rows[0];
  if (!row) return null;
  const raw = Buffer.isBuffer(row.raw) ? row.raw : Buffer.from(row.raw);
  return { ...toSummary(row), raw };
}

export async function listMessages(q: Queryable, filter: MessageFilter = {}): Promise<MessageSummary[]> {
  const where: string[] = [];
  const sql = new Sql();
  const p = (v: unknown) => sql.p(v);
  if (filter.channel) where.push(`channel = ${p(filter.channel)}`);
  if (filter.direction) where.push(`direction = ${p(filter.direction)}`);
  if (filter.status) {
    const statuses = Array.isArray(filter.status) ? filter.status : [filter.status];
    where.push(`status = ANY(${p(statuses)})`);
  }
  if (filter.type) {
    const t = p(filter.type);
    where.push(`(message_type = ${t} OR message_type LIKE ${t} || '^%')`);
  }
  if (filter.controlId) where.push(`control_id = ${p(filter.controlId)}`);
  if (filter.sender) where.push(`sender = ${p(filter.sender)}`);
  if (filter.patient) {
    const ref = filter.patient.includes('/') ? filter.patient : `Patient/${filter.patient}`;
    where.push(`patient_refs @> ARRAY[${p(ref)}]::text[]`);
  }
  if (filter.holdKind) where.push(`hold_kind = ${p(filter.holdKind)}`);
  if (filter.since) where.push(`received_at >= ${p(filter.since.toISOString())}`);
  if (filter.until) where.push(`received_at < ${p(filter.until.toISOString())}`);
  if (filter.beforeSeq !== undefined) where.push(`seq < ${p(filter.beforeSeq)}`);
  const limit = Math.min(Math.max(filter.limit ?? 100, 1), 1000);
  const res = await q.query<Row>(
    `SELECT ${SUMMARY_COLUMNS} FROM message_log ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY seq DESC LIMIT ${limit}`,
    sql.params,
  );
  return res.rows.map(toSummary);
}

interface Row {
  id: string;
  seq: string | number;
  channel: string;
  direction: MessageDirection;
  sender: string | null;
  receiver: string | null;
  remote_address: string | null;
  control_id: string | null;
  message_type: string | null;
  version: string | null;
  status: MessageStatus;
  error: string | null;
  ack: string | null;
  resource_refs: string[];
  patient_refs: string[];
  replay_of: string | null;
  hold_kind: HoldKind | null;
  resolution: string | null;
  attempts: number;
  received_at: Date | string;
  processed_at: Date | string | null;
  updated_at: Date | string;
}

const iso = (d: Date | string) => (d instanceof Date ? d.toISOString() : new Date(d).toISOString());

function toSummary(r: Row): MessageSummary {
  return {
    id: r.id,
    seq: Number(r.seq),
    channel: r.channel,
    direction: r.direction,
    sender: r.sender,
    receiver: r.receiver,
    remoteAddress: r.remote_address,
    controlId: r.control_id,
    messageType: r.message_type,
    version: r.version,
    status: r.status,
    error: r.error,
    ack: r.ack,
    resourceRefs: r.resource_refs ?? [],
    patientRefs: r.patient_refs ?? [],
    replayOf: r.replay_of,
    holdKind: r.hold_kind ?? null,
    resolution: r.resolution ?? null,
    attempts: r.attempts,
    receivedAt: iso(r.received_at),
    processedAt: r.processed_at ? iso(r.processed_at) : null,
    updatedAt: iso(r.updated_at),
  };
}

/** Statuses that are final: an error or a processed message is history; held and received ones are still work. */
const PRUNABLE: MessageStatus[] = ['processed', 'error'];

/**
 * Deletes logged messages received before `before` whose handling is finished (processed or error), in batches
 * so no statement holds many rows at once. A message a replay points at goes only after that replay (a row still
 * referenced is never deleted; the next round takes it), so an original with a younger, kept replay stays.
 * Returns how many were deleted.
 */
export async function pruneMessages(q: Queryable, before: Date, batch = 5000): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await q.query(
      `DELETE FROM message_log WHERE seq IN (
         SELECT m.seq FROM message_log m
          WHERE m.received_at < $1 AND m.status = ANY($2::text[])
            AND NOT EXISTS (SELECT 1 FROM message_log k WHERE k.replay_of = m.id)
          ORDER BY m.seq LIMIT $3)`,
      [before, PRUNABLE, batch],
    );
    if (r.rowCount === 0) return total;
    total += r.rowCount;
  }
}
