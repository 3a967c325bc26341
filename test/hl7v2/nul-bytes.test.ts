import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getMessage, listMessages } from '../../src/messages/message-log.js';
import { MllpClient, startHarness, type Harness } from './harness.js';

const kinds = ['pglite', ...(process.env.TEST_DATABASE_URL ? ['postgres' as const] : [])] as const;

/** A NUL byte cannot be stored in a PostgreSQL text column: it must not make a message unanswerable (a poison message). */
describe.each(kinds)('HL7 v2 with NUL bytes in the header (%s)', (kind) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(kind);
  }, 60_000);
  afterAll(async () => {
    await h?.close();
  });

  const oru = (sender: string, control: string) =>
    [
      `MSH|^~\\&|${sender}|HOSP|CONFLUX|HOSP|20240102030405||ORU^R01|${control}|P|2.5.1`,
      `PID|1||NUL-${control.replace(/\0/g, '')}^^^HOSP^MR||Doe^John||19800101|M`,
      `OBR|1|P-${control.replace(/\0/g, '')}|F-${control.replace(/\0/g, '')}|24331-1^Panel^LN|||20240102010000`,
      'OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F',
    ].join('\r');

  it('a NUL in MSH-3 or MSH-10 is answered and logged with the exact bytes; a resend is recognised as a duplicate', async () => {
    const c = await MllpClient.connect(h.listener.port);
    for (const [sender, control] of [['LA\0B', 'NUL-1'], ['LAB', 'NUL\0-2']] as const) {
      const ack = await c.request(oru(sender, control));
      expect(ack).toContain(`MSA|AA|${control}`);
      const [row] = (await listMessages(h.rt.db, { limit: 1 })).filter((m) => m.controlId === control.replace('\0', '\u2400'));
      expect(row, `the log row of ${JSON.stringify(control)}`).toBeDefined();
      expect(row!.status).toBe('processed');
      expect(row!.sender).toBe(`${sender.replace('\0', '\u2400')}^HOSP`);
      expect(Buffer.from((await getMessage(h.rt.db, row!.id))!.raw).includes(Buffer.from([0]))).toBe(true);
      const again = await c.request(oru(sender, control));
      expect(again).toContain('duplicate of an already processed message');
    }
    c.socket.destroy();
  }, 60_000);
});
