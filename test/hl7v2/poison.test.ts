import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getMessage, listMessages } from '../../src/messages/message-log.js';
import { errText, MllpClient, msa, startHarness, type Harness } from './harness.js';

const kinds = ['pglite', ...(process.env.TEST_DATABASE_URL ? ['postgres' as const] : [])] as const;

/**
 * Poison messages: input Conflux cannot take as text must be answered (AE/AR with an ERR that names the defect),
 * logged with its exact bytes and its reason, and a resend of the same bytes gets the same answer instead of
 * looping (no ACK → the sender resends forever).
 */
describe.each(kinds)('HL7 v2 poison messages through a real MLLP socket (%s)', (kind) => {
  let h: Harness;
  let c: MllpClient;
  beforeAll(async () => {
    h = await startHarness(kind);
    c = await MllpClient.connect(h.listener.port);
  }, 60_000);
  afterAll(async () => {
    c?.socket.destroy();
    await h?.close();
  });

  const oru = (control: string, pid5: string, msh18 = '') =>
    Buffer.concat([
      Buffer.from(`MSH|^~\\&|LAB|HOSP|CONFLUX|HOSP|20240102030405||ORU^R01|${control}|P|2.5.1||||||${msh18}\r`, 'latin1'),
      Buffer.from(`PID|1||P-${control}^^^HOSP^MR||`, 'latin1'),
      Buffer.isBuffer(pid5) ? pid5 : Buffer.from(pid5, 'latin1'),
      Buffer.from(`||19800101|M\rOBR|1|PL-${control}|FL-${control}|24331-1^Panel^LN|||20240102010000\rOBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F`, 'latin1'),
    ]);

  /** Sends the bytes twice; both answers must agree, and the log must hold one row for them with the bytes and reason. */
  async function poison(bytes: Buffer, expectErr: RegExp, rows = 1, expectReason = expectErr) {
    const first = await c.request(bytes);
    const again = await c.request(bytes);
    expect(['AE', 'AR']).toContain(msa(first).code);
    expect(msa(again).code).toBe(msa(first).code);
    expect(errText(first)).toMatch(expectErr);
    const logged = (await listMessages(h.rt.db, { limit: 10 })).filter((m) => m.status === 'error');
    const mine = [];
    for (const m of logged) if ((await getMessage(h.rt.db, m.id))!.raw.equals(bytes)) mine.push(m);
    expect(mine.length, 'log rows holding these exact bytes').toBeGreaterThanOrEqual(1);
    expect(mine.length).toBeLessThanOrEqual(rows === 1 ? 2 : rows);
    expect(mine[0]!.error).toMatch(expectReason);
    return { first, rows: mine };
  }

  it('invalid UTF-8 in a message that declares UTF-8 (MSH-18): AE naming MSH-18, one log row, resend counted on it', async () => {
    const bytes = oru('BADUTF8', Buffer.from([0x44, 0x6f, 0xc3, 0x28, 0x65]) as unknown as string, 'UNICODE UTF-8');
    const { rows } = await poison(bytes, /MSH\^1\^18.*UTF-8/, 1, /MSH-18: .*UTF-8/);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.attempts).toBe(2);
  });

  it('a character set Conflux cannot decode (MSH-18 ISO IR87): AR naming MSH-18', async () => {
    const { first } = await poison(oru('JIS', 'Yamada^Taro', 'ISO IR87'), /MSH\^1\^18.*ISO IR87/, 1, /MSH-18: .*ISO IR87/);
    expect(msa(first).code).toBe('AR');
  });

  it('a NUL byte in PID-5: AE naming PID-5, the exact bytes kept', async () => {
    const { rows } = await poison(oru('NULPID', 'Do\0e^John'), /PID\^1\^5.*NUL/, 1, /PID-5: .*NUL/);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.attempts).toBe(2);
  });

  it('a lone CR: AE naming the missing MSH', async () => {
    await poison(Buffer.from('\r'), /no MSH/, 2);
  });

  it('binary garbage: AE, logged with its bytes', async () => {
    const garbage = Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7919 + 13) % 256).filter((b) => b !== 0x0b && b !== 0x1c));
    await poison(garbage, /MSH|outside any message/, 2);
  });

  it('after the poison, a good message on the same connection is still filed', async () => {
    const ack = await c.request(oru('GOOD-1', 'Doe^John'));
    expect(msa(ack).code).toBe('AA');
  });
});
