import { describe, expect, it } from 'vitest';
import { getMessage, listMessages } from '../../src/messages/message-log.js';
import { encodeMessage } from '../../facades/serial/astm/frame.js';
import { sendSession } from '../../facades/serial/astm/sender.js';
import { suiteAstmRig } from './rig.js';

/** A value the database cannot store as text must be answered and logged once, not NAKed into endless retransmission. */
describe('ASTM poison content over a real pty', () => {
  const { rig, nextEvent } = suiteAstmRig({ dirPrefix: 'conflux-astm-poison-', patientName: 'Poison Patient', deviceName: 'analyzer sending NUL' });

  it('a NUL byte in a result value: the frame is ACKed, the message logged as an error with its exact bytes', async () => {
    const records = ['H|\\^&|||SE-1520^Spotchem^1.0.0|||||||P||20241101121500', 'O|1|S-NUL||^^^GLU', 'R|1|^^^GLU|po\0son|mmol/L||||F||||20241101120000', 'L|1|N'];
    const done = nextEvent();
    expect(await sendSession(rig.line, encodeMessage(records))).toEqual({ ok: true, naks: 0 });
    const e = await done;
    expect(e.error).toBeDefined();
    const [row] = (await listMessages(rig.env.db, { channel: 'serial', limit: 5 })).filter((m) => m.id === e.messageId);
    expect(row?.status).toBe('error');
    expect(row?.error).toBeTruthy();
    expect((await getMessage(rig.env.db, e.messageId!))!.raw.includes(Buffer.from('po\0son', 'latin1'))).toBe(true);
    expect((await listMessages(rig.env.db, { channel: 'serial', limit: 50 })).length).toBe(1);
  }, 30_000);
});
