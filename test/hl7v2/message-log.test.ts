import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findDuplicate, getMessage, listMessages, pruneMessages, recordMessage, updateMessage } from '../../src/messages/message-log.js';
import { retentionDays } from '../../src/config.js';
import { DB_KINDS, openTestDb, type TestDb } from './test-db.js';

describe.each(DB_KINDS)('message log (%s)', (kind) => {
  let t: TestDb;
  beforeAll(async () => {
    t = await openTestDb(kind);
  });
  afterAll(async () => t?.close());

  it('keeps the raw bytes exactly, and finds entries by status, type, control id, patient and time', async () => {
    const raw = Buffer.from([0xef, 0xbb, 0xbf, 0x4d, 0x53, 0x48, 0x0d, 0x00, 0xff]);
    const id = await recordMessage(t.db, {
      channel: 'mllp',
      direction: 'in',
      raw,
      sender: 'LAB^HOSP',
      controlId: 'C1',
      messageType: 'ORU^R01^ORU_R01',
      version: '2.5.1',
    });
    const got = await getMessage(t.db, id);
    expect(got?.raw.equals(raw)).toBe(true);
    expect(got?.status).toBe('received');
    expect(got?.processedAt).toBeNull();

    await updateMessage(t.db, id, {
      status: 'processed',
      ack: 'MSH|...',
      resourceRefs: ['Patient/p1', 'Observation/o1'],
      patientRefs: ['Patient/p1'],
    });
    const other = await recordMessage(t.db, { channel: 'serial', direction: 'in', raw: 'H|\\^&', status: 'error', error: 'bad checksum' });

    expect((await listMessages(t.db, { status: 'processed' })).map((m) => m.id)).toEqual([id]);
    expect((await listMessages(t.db, { type: 'ORU' })).map((m) => m.id)).toEqual([id]);
    expect((await listMessages(t.db, { type: 'ORU^R01' })).map((m) => m.id)).toEqual([id]);
    expect(await listMessages(t.db, { type: 'ORU^R0' })).toEqual([]);
    expect((await listMessages(t.db, { controlId: 'C1' })).map((m) => m.id)).toEqual([id]);
    expect((await listMessages(t.db, { patient: 'p1' })).map((m) => m.id)).toEqual([id]);
    expect((await listMessages(t.db, { channel: 'serial' })).map((m) => m.id)).toEqual([other]);
    expect((await listMessages(t.db, {})).map((m) => m.id)).toEqual([other, id]);
    expect(await listMessages(t.db, { since: new Date(Date.now() + 60_000) })).toEqual([]);
    const first = (await listMessages(t.db, { limit: 1 }))[0]!;
    expect((await listMessages(t.db, { beforeSeq: first.seq })).map((m) => m.id)).toEqual([id]);
    const processed = await getMessage(t.db, id);
    expect(processed?.processedAt).not.toBeNull();
    expect(processed?.resourceRefs).toEqual(['Patient/p1', 'Observation/o1']);
  });

  it('finds an earlier message with the same sender and control id, preferring a processed one', async () => {
    const a = await recordMessage(t.db, { channel: 'mllp', direction: 'in', raw: 'x', sender: 'S^F', controlId: 'D1', status: 'error' });
    expect((await findDuplicate(t.db, 'S^F', 'D1'))?.id).toBe(a);
    const b = await recordMessage(t.db, { channel: 'mllp', direction: 'in', raw: 'x', sender: 'S^F', controlId: 'D1', status: 'processed' });
    await recordMessage(t.db, { channel: 'mllp', direction: 'in', raw: 'x', sender: 'S^F', controlId: 'D1', status: 'error' });
    expect((await findDuplicate(t.db, 'S^F', 'D1'))?.id).toBe(b);
    expect(await findDuplicate(t.db, 'OTHER^F', 'D1')).toBeNull();
    expect(await findDuplicate(t.db, 'S^F', 'D1', { channel: 'serial' })).toBeNull();
  });

  it('finds a resend of a message without a sender (MSH-3/4 empty) too', async () => {
    const a = await recordMessage(t.db, { channel: 'mllp', direction: 'in', raw: 'x', controlId: 'N1', status: 'processed' });
    expect((await findDuplicate(t.db, null, 'N1'))?.id).toBe(a);
    expect(await findDuplicate(t.db, 'S^F', 'N1')).toBeNull();
  });

  // The lookup runs for every message received: it must stay an index lookup on sender and control id, not a
  // scan of the channel's whole log (which `sender IS NOT DISTINCT FROM $3` was).
  it.each([['S^F'], [null]])('looks a resend up by index on sender %s and control id, whatever the log size', async (sender) => {
    const plans: string[] = [];
    await t.db.transaction(async (tx) => {
      await tx.query('SET LOCAL enable_seqscan = off');
      await findDuplicate(
        {
          exec: (s) => tx.exec(s),
          query: async <R,>(sql: string, params?: unknown[]) => {
            const plan = await tx.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, params);
            plans.push(plan.rows.map((r) => r['QUERY PLAN']).join('\n'));
            return tx.query<R>(sql, params);
          },
        },
        sender,
        'D1',
      );
    });
    const cond = /Index Cond: \((.*)\)/.exec(plans[0]!)?.[1] ?? '';
    expect(cond, plans[0]).toMatch(sender === null ? /sender IS NULL/ : /sender = /);
    expect(cond, plans[0]).toMatch(/control_id = /);
  });

  it('prunes finished messages older than the cut; held, in-flight and young ones, and originals of kept replays, stay', async () => {
    const aged = async (status: 'processed' | 'error' | 'held' | 'received', days: number, replayOf?: string) => {
      const id = await recordMessage(t.db, { channel: 'mllp', direction: 'in', raw: 'x', status, controlId: `PR-${status}-${days}`, replayOf });
      await t.db.query('UPDATE message_log SET received_at = now() - make_interval(days => $2::int) WHERE id = $1', [id, days]);
      return id;
    };
    const gone = [await aged('processed', 40), await aged('error', 40)];
    const kept = [await aged('held', 40), await aged('received', 40), await aged('processed', 1)];
    const original = await aged('error', 40);
    kept.push(original, await aged('processed', 2, original)); // its replay is young: both stay
    const oldOriginal = await aged('error', 45);
    gone.push(oldOriginal, await aged('processed', 35, oldOriginal)); // both old: both go
    // Batches of one: the original comes up before its replay and must wait for it (a foreign key points at it).
    expect(await pruneMessages(t.db, new Date(Date.now() - 30 * 86_400_000), 1)).toBe(4);
    for (const id of gone) expect(await getMessage(t.db, id), id).toBeNull();
    for (const id of kept) expect(await getMessage(t.db, id), id).not.toBeNull();
    expect(await pruneMessages(t.db, new Date(Date.now() - 30 * 86_400_000))).toBe(0);
  });

  it('reads MESSAGE_LOG_RETENTION_DAYS, naming it when it is wrong', () => {
    expect(retentionDays({})).toBeUndefined();
    expect(retentionDays({ MESSAGE_LOG_RETENTION_DAYS: '90' })).toBe(90);
    expect(() => retentionDays({ MESSAGE_LOG_RETENTION_DAYS: 'forever' })).toThrow(/MESSAGE_LOG_RETENTION_DAYS must be a positive number of days/);
  });

  it('says which message is missing when updating an unknown id', async () => {
    await expect(updateMessage(t.db, 'nope', { status: 'processed' })).rejects.toThrow(/message nope not found/);
  });
});
