import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { config } from '../../facades/hl7v2/config.js';
import { listMessages } from '../../src/messages/message-log.js';
import { MllpClient, startHarness, type Harness } from './harness.js';

describe('MLLP_MAX_SEGMENTS', () => {
  it('defaults to 10,000 and refuses a value that is not a positive whole number, naming the variable', () => {
    expect(config({}).settings.mllp.maxSegments).toBe(10_000);
    expect(config({ MLLP_MAX_SEGMENTS: '500' }).settings.mllp.maxSegments).toBe(500);
    expect(() => config({ MLLP_MAX_SEGMENTS: 'many' })).toThrow(/MLLP_MAX_SEGMENTS/);
  });
});

describe('a message with more segments than MLLP_MAX_SEGMENTS (pglite)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness('pglite', (deps) => {
      deps.maxSegments = 20;
    });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
  });

  const oru = (control: string, results: number) =>
    [
      `MSH|^~\\&|LAB|HOSP|CONFLUX|HOSP|20240102030405||ORU^R01|${control}|P|2.5.1`,
      `PID|1||LIM-${control}^^^HOSP^MR||Doe^John||19800101|M`,
      `OBR|1|P-${control}|F-${control}|24331-1^Panel^LN|||20240102010000`,
      ...Array.from({ length: results }, (_, i) => `OBX|${i + 1}|NM|2345-7^Glucose^LN||${i}|mmol/L|||||F`),
    ].join('\r');

  it('is answered AE with an ERR naming the limit, logged with its bytes, and nothing is filed', async () => {
    const c = await MllpClient.connect(h.listener.port);
    const before = (await h.rt.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation'`)).rows[0]!.n;
    const ack = await c.request(oru('BIG-1', 30));
    expect(ack).toContain('MSA|AE|BIG-1');
    expect(ack).toMatch(/ERR\|\|MSH\^1\|207\^Application internal error\^HL70357\|E\|\|\|\|the message has 33 segments; this server takes at most 20 in one message \(MLLP_MAX_SEGMENTS\)/);
    const [row] = await listMessages(h.rt.db, { limit: 1 });
    expect(row).toMatchObject({ controlId: 'BIG-1', status: 'error' });
    const after = (await h.rt.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation'`)).rows[0]!.n;
    expect(after).toBe(before);
    // Under the limit, the same kind of message is filed.
    expect(await c.request(oru('SMALL-1', 10))).toContain('MSA|AA|SMALL-1');
    c.socket.destroy();
  }, 60_000);
});
