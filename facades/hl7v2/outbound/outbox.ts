/**
 * The outbox table: enqueue (inside the writer's transaction), claim (FOR UPDATE SKIP LOCKED plus a
 * lease), record the outcome, list and replay. Per (destination, patient lane) a row is claimable only
 * when no earlier row of its lane is still queued or being sent, which keeps per-patient order across
 * any number of workers and processes.
 */
import { randomUUID } from 'node:crypto';
import { type Database, type Queryable, Sql } from '../../../src/index.js';

/**
 * 'superseded': never sent because another row's message carries the same content (a standalone
 * Observation ORU whose Observation a DiagnosticReport then listed); `supersededBy` names that row and
 * `lastError` says why.
 */
export type OutboxState = 'queued' | 'sending' | 'delivered' | 'dead' | 'superseded';
export const OUTBOX_STATES: readonly OutboxState[] = ['queued', 'sending', 'delivered', 'dead', 'superseded'];
/** The states replay takes: finished ones. */
const REPLAYABLE = ['delivered', 'dead', 'superseded'];

export interface OutboxRow {
  id: number;
  destination: string;
  event: string;
  groupKey: string;
  triggerRef: string;
  patientKey: string;
  state: OutboxState;
  attempts: number;
  nextAttemptAt: string;
  payload: string | null;
  controlId: string | null;
  messageType: string | null;
  ack: string | null;
  ackCode: string | null;
  lastError: string | null;
  replayOf: number | null;
  supersededBy: number | null;
  messageLogId: string | null;
  createdAt: string;
  firstSentAt: string | null;
  finishedAt: string | null;
  claimToken: string | null;
}

const COLUMNS = `id, destination, event, group_key, trigger_ref, patient_key, state, attempts, next_attempt_at, payload, control_id,
  message_type, ack, ack_code, last_error, replay_of, superseded_by, message_log_id, created_at, first_sent_at, finished_at, claim_token`;

interface Row {
  id: string | number;
  destination: string;
  event: string;
  group_key: string;
  trigger_ref: string;
  patient_key: string;
  state: OutboxState;
  attempts: number;
  next_attempt_at: Date | string;
  payload: string | null;
  control_id: string | null;
  message_type: string | null;
  ack: string | null;
  ack_code: string | null;
  last_error: string | null;
  replay_of: string | number | null;
  superseded_by: string | number | null;
  message_log_id: string | null;
  created_at: Date | string;
  first_sent_at: Date | string | null;
  finished_at: Date | string | null;
  claim_token: string | null;
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

function toRow(r: Row): OutboxRow {
  return {
    id: Number(r.id),
    destination: r.destination,
    event: r.event,
    groupKey: r.group_key,
    triggerRef: r.trigger_ref,
    patientKey: r.patient_key,
    state: r.state,
    attempts: r.attempts,
    nextAttemptAt: iso(r.next_attempt_at)!,
    payload: r.payload,
    controlId: r.control_id,
    messageType: r.message_type,
    ack: r.ack,
    ackCode: r.ack_code,
    lastError: r.last_error,
    replayOf: r.replay_of === null ? null : Number(r.replay_of),
    supersededBy: r.superseded_by === null || r.superseded_by === undefined ? null : Number(r.superseded_by),
    messageLogId: r.message_log_id,
    createdAt: iso(r.created_at)!,
    firstSentAt: iso(r.first_sent_at),
    finishedAt: iso(r.finished_at),
    claimToken: r.claim_token,
  };
}

export interface NewOutboxRow {
  destination: string;
  event: string;
  groupKey: string;
  triggerRef: string;
  patientKey: string;
  /**
   * Group keys ('Observation/7') whose not-yet-built standalone ORU this row's message carries: those
   * rows of the same destination become 'superseded' instead of sending the result a second time.
   */
  carries?: string[];
}

/** Inside the writer's transaction. A change to a resource whose message is not built yet joins that row. */
export async function enqueue(tx: Queryable, rows: NewOutboxRow[]): Promise<void> {
  for (const r of rows) {
    const id = await enqueueOne(tx, r);
    if (!r.carries?.length) continue;
    // Only rows whose bytes are not fixed yet: a message already on the wire (or retrying) keeps its
    // at-least-once contract. Matches the coalescing index, so this costs an index probe per result.
    await tx.query(
      `UPDATE hl7_outbox SET state = 'superseded', superseded_by = $3, last_error = $4, finished_at = now(), updated_at = now()
        WHERE destination = $1 AND event = 'ORU' AND group_key = ANY($2::text[]) AND state = 'queued' AND payload IS NULL AND id <> $3`,
      [r.destination, r.carries, id, `superseded: the ORU of ${r.groupKey} (outbound row ${id}) carries this result`],
    );
  }
}

/**
 * Claims up to `limit` rows of one destination that are due, each the head of its patient lane.
 * A row in 'sending' whose lease ran out (its process died) is claimable again; its payload and MSH-10
 * are reused, so the receiver can recognise the resend.
 */
export async function claim(db: Database, destination: string, limit: number, leaseMs: number): Promise<OutboxRow[]> {
  const token = randomUUID();
  return db.transaction(async (tx) => {
    const r = await tx.query<Row>(
      `WITH due AS (
         SELECT o.id FROM hl7_outbox o
          WHERE o.destination = $1
            AND ((o.state = 'queued' AND o.next_attempt_at <= now()) OR (o.state = 'sending' AND o.lease_until < now()))
            AND NOT EXISTS (
              SELECT 1 FROM hl7_outbox p
               WHERE p.destination = o.destination AND p.patient_key = o.patient_key AND p.id < o.id
                 AND p.state IN ('queued', 'sending'))
          ORDER BY o.id
          LIMIT $2
          FOR UPDATE SKIP LOCKED)
       UPDATE hl7_outbox o SET state = 'sending', claim_token = $3, lease_until = now() + ($4::text || ' milliseconds')::interval,
              updated_at = now()
         FROM due WHERE o.id = due.id
       RETURNING ${COLUMNS.split(',').map((c) => `o.${c.trim()}`).join(', ')}`,
      [destination, limit, token, String(leaseMs)],
    );
    return r.rows.map(toRow).sort((a, b) => a.id - b.id);
  });
}

/**
 * Fixes the message bytes before the send and renews this row's lease for the exchange. False when
 * another worker has taken the row over (our lease ran out): then we must not send it.
 */
export async function savePayload(q: Queryable, row: OutboxRow, payload: string, controlId: string, messageType: string, leaseMs: number): Promise<boolean> {
  const r = await q.query(
    `UPDATE hl7_outbox SET payload = $3, control_id = $4, message_type = $5,
            lease_until = now() + ($6::text || ' milliseconds')::interval, updated_at = now()
      WHERE id = $1 AND claim_token = $2 AND state = 'sending'`,
    [row.id, row.claimToken, payload, controlId, messageType, String(leaseMs)],
  );
  return r.rowCount > 0;
}

export interface Outcome {
  state: 'delivered' | 'dead' | 'queued';
  ack?: string | null;
  ackCode?: string | null;
  error?: string | null;
  /** For 'queued' (a retry): when. */
  retryAt?: Date;
  messageLogId?: string | null;
  /** Counted when the message went on the wire (not for a build failure). */
  attempted: boolean;
}

/** Records the outcome, unless another worker took the row over meanwhile (lease expired). */
export async function finish(q: Queryable, row: OutboxRow, o: Outcome): Promise<boolean> {
  const r = await q.query(
    `UPDATE hl7_outbox SET state = $3, ack = COALESCE($4, ack), ack_code = COALESCE($5, ack_code), last_error = $6,
            attempts = attempts + $7, next_attempt_at = COALESCE($8, next_attempt_at),
            message_log_id = COALESCE($9, message_log_id),
            first_sent_at = CASE WHEN $7 = 1 THEN COALESCE(first_sent_at, now()) ELSE first_sent_at END,
            finished_at = CASE WHEN $3 IN ('delivered', 'dead') THEN now() ELSE NULL END,
            claim_token = NULL, lease_until = NULL, updated_at = now()
      WHERE id = $1 AND claim_token = $2 AND state = 'sending'`,
    [row.id, row.claimToken, o.state, o.ack ?? null, o.ackCode ?? null, o.error ?? null, o.attempted ? 1 : 0, o.retryAt?.toISOString() ?? null, o.messageLogId ?? null],
  );
  return r.rowCount > 0;
}

/** Gives back claimed rows that were not sent (shutdown, pause) without counting an attempt. */
export async function release(q: Queryable, rows: OutboxRow[]): Promise<void> {
  for (const row of rows) {
    await q.query(
      `UPDATE hl7_outbox SET state = 'queued', claim_token = NULL, lease_until = NULL, updated_at = now()
        WHERE id = $1 AND claim_token = $2 AND state = 'sending'`,
      [row.id, row.claimToken],
    );
  }
}

export interface OutboxFilter {
  destination?: string;
  state?: OutboxState | OutboxState[];
  patient?: string;
  beforeId?: number;
  limit?: number;
  withPayload?: boolean;
}

export async function listOutbox(q: Queryable, f: OutboxFilter = {}): Promise<OutboxRow[]> {
  const where: string[] = [];
  const sql = new Sql();
  const p = (v: unknown) => sql.p(v);
  if (f.destination) where.push(`destination = ${p(f.destination)}`);
  if (f.state) where.push(`state = ANY(${p(Array.isArray(f.state) ? f.state : [f.state])}::text[])`);
  if (f.patient) where.push(`patient_key = ${p(f.patient.includes('/') ? f.patient : `Patient/${f.patient}`)}`);
  if (f.beforeId !== undefined) where.push(`id < ${p(f.beforeId)}`);
  const limit = Math.min(Math.max(f.limit ?? 100, 1), 1000);
  const r = await q.query<Row>(
    `SELECT ${COLUMNS} FROM hl7_outbox ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${limit}`,
    sql.params,
  );
  return r.rows.map(toRow).map((row) => (f.withPayload ? row : { ...row, payload: null }));
}

export async function getOutbox(q: Queryable, id: number): Promise<OutboxRow | undefined> {
  const r = await q.query<Row>(`SELECT ${COLUMNS} FROM hl7_outbox WHERE id = $1`, [id]);
  return r.rows[0] ? toRow(r.rows[0]) : undefined;
}

export const emptyCounts = (): Record<OutboxState, number> => ({ queued: 0, sending: 0, delivered: 0, dead: 0, superseded: 0 });

export async function countsByDestination(q: Queryable): Promise<Record<string, Record<OutboxState, number>>> {
  const r = await q.query<{ destination: string; state: OutboxState; n: string | number }>(
    'SELECT destination, state, count(*) AS n FROM hl7_outbox GROUP BY destination, state',
  );
  const out: Record<string, Record<OutboxState, number>> = {};
  for (const row of r.rows) {
    out[row.destination] ??= emptyCounts();
    out[row.destination]![row.state] = Number(row.n);
  }
  return out;
}

/**
 * A replay is a new row at the end of the patient's lane, copying the original's bytes with a fresh
 * MSH-10 (receivers, ours included, drop a resend of a control id they already took as a duplicate).
 * `rebuild` drops the bytes instead, so the message is built again from the current resources. A
 * superseded row has no bytes, so its replay is always built (an operator who wants the standalone ORU).
 */
export async function replay(q: Queryable, id: number, opts: { rebuild?: boolean } = {}): Promise<number | undefined> {
  const r = await q.query<{ id: string | number }>(
    `INSERT INTO hl7_outbox (destination, event, group_key, trigger_ref, patient_key, payload, message_type, replay_of)
     SELECT destination, event, group_key, trigger_ref, patient_key,
            CASE WHEN $2 THEN NULL ELSE payload END, CASE WHEN $2 THEN NULL ELSE message_type END, id
       FROM hl7_outbox WHERE id = $1 AND state = ANY($3::text[])
     RETURNING id`,
    [id, opts.rebuild === true, REPLAYABLE],
  );
  return r.rows[0] ? Number(r.rows[0].id) : undefined;
}

export async function replayAll(q: Queryable, f: { destination?: string; state?: 'dead' | 'delivered'; rebuild?: boolean }): Promise<number[]> {
  const ids = await q.query<{ id: string | number }>(
    `SELECT id FROM hl7_outbox WHERE state = $1 ${f.destination ? 'AND destination = $2' : ''} ORDER BY id`,
    f.destination ? [f.state ?? 'dead', f.destination] : [f.state ?? 'dead'],
  );
  const out: number[] = [];
  for (const row of ids.rows) {
    const n = await replay(q, Number(row.id), { rebuild: f.rebuild });
    if (n !== undefined) out.push(n);
  }
  return out;
}

/**
 * Destinations that took (or may have taken) a result message for `groupKey`: delivered, on the wire, or
 * built and waiting for a retry. A dead row does not count: the receiver rejected it. Only withdrawals ask
 * this (rare), so it needs no index of its own beyond the outbox's.
 */
export async function destinationsThatReceived(q: Queryable, groupKey: string): Promise<Set<string>> {
  const r = await q.query<{ destination: string }>(
    `SELECT DISTINCT destination FROM hl7_outbox
      WHERE group_key = $1 AND (event = 'ORU' OR event LIKE 'ORU:%')
        AND (state IN ('delivered', 'sending') OR (state = 'queued' AND payload IS NOT NULL))`,
    [groupKey],
  );
  return new Set(r.rows.map((x) => x.destination));
}

/**
 * A withdrawal's effect on rows not built yet, inside the writer's transaction: an unbuilt ORU of the
 * group is superseded (by the withdrawal row when there is one, which is built from the same current
 * state and comes later in the lane; otherwise the result was never sent and now must not be).
 */
export async function supersedeUnbuilt(q: Queryable, destination: string, groupKey: string, by: number | null, reason: string): Promise<void> {
  await q.query(
    `UPDATE hl7_outbox SET state = 'superseded', superseded_by = $3, last_error = $4, finished_at = now(), updated_at = now()
      WHERE destination = $1 AND group_key = $2 AND event = 'ORU' AND state = 'queued' AND payload IS NULL`,
    [destination, groupKey, by, reason],
  );
}

/** Inserts one withdrawal row (joining an unbuilt one of the same group) and returns its id. */
export async function enqueueOne(q: Queryable, r: NewOutboxRow): Promise<number> {
  const ins = await q.query<{ id: string | number }>(
    `INSERT INTO hl7_outbox (destination, event, group_key, trigger_ref, patient_key)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (destination, group_key, event) WHERE state = 'queued' AND payload IS NULL
     DO UPDATE SET trigger_ref = EXCLUDED.trigger_ref, updated_at = now()
     RETURNING id`,
    [r.destination, r.event, r.groupKey, r.triggerRef, r.patientKey],
  );
  return Number(ins.rows[0]!.id);
}
