/**
 * Host query (LIS2-A2 Q record) over a real pty: an analyzer in query mode asks for the orders of the samples
 * it loaded; the host answers in its own E1381 session after the analyzer's EOT, with P and O records built
 * from the active ServiceRequests (instrument test codes from the code map), or L|1|I when it has none.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SerialPort } from 'serialport';
import type { Patient, ServiceRequest } from '@medplum/fhirtypes';
import { getMessage } from '../../src/messages/message-log.js';
import { encodeMessage } from '../../facades/serial/astm/frame.js';
import { AstmReceiver } from '../../facades/serial/astm/link.js';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { type Line, sendSession } from '../../facades/serial/astm/sender.js';
import { parseSerialConfig } from '../../facades/serial/config.js';
import { startPort, type RunningPort } from '../../facades/serial/index.js';
import { openTestEnv, type TestEnv } from '../devices/helpers.js';
import { eventQueue, ptyPair, type PtyPair, until, stopRig } from './pty.js';
import { quiet } from './rig.js';


describe('ASTM host query over a real pty (socat)', () => {
  let env: TestEnv;
  let dir: string;
  let pty: PtyPair;
  let running: RunningPort;
  let analyzer: SerialPort;
  // The analyzer's side: its own E1381 sender for the query, its own receiver for the host's answer.
  let sending = false;
  const replies: number[] = [];
  let waiter: ((b: number) => void) | undefined;
  const line: Line = {
    write: (b) => void analyzer.write(b),
    nextByte: (ms) =>
      new Promise((resolve) => {
        if (replies.length) return resolve(replies.shift()!);
        const t = setTimeout(() => resolve(null), ms);
        waiter = (b) => {
          clearTimeout(t);
          waiter = undefined;
          resolve(b);
        };
      }),
  };
  const answers = eventQueue<string>();
  const instrument = new AstmReceiver({ write: (b) => void analyzer.write(b), onMessage: async (m) => answers.push(m.text), onIncomplete: () => undefined });
  const sent = eventQueue<{ messageId: string; ok: boolean }>();
  const eots = eventQueue<void>();

  /** Sends a query session and returns the host's answer, once the host has ended its session (EOT). */
  async function query(records: string[]): Promise<string[][]> {
    const answer = answers.next();
    const hostDone = eots.next();
    sending = true;
    expect(await sendSession(line, encodeMessage(records))).toEqual({ ok: true, naks: 0 });
    sending = false;
    const text = await answer;
    await hostDone;
    return parseRecords(text).records.map((r) => r.fields);
  }

  beforeAll(async () => {
    env = await openTestEnv('pglite');
    dir = mkdtempSync(path.join(tmpdir(), 'conflux-query-'));
    pty = await ptyPair(path.join(dir, 'host'), path.join(dir, 'analyzer'));
    const patient = await env.store.create<Patient>({
      resourceType: 'Patient', identifier: [{ system: 'urn:test:mrn', value: 'MRN-7' }], name: [{ family: 'Doe', given: ['Jane'] }], gender: 'female', birthDate: '1970-01-02',
    });
    const order = (loinc: string, status: ServiceRequest['status'], priority: ServiceRequest['priority'] = 'routine') =>
      env.store.create<ServiceRequest>({
        resourceType: 'ServiceRequest', status, priority, intent: 'order', subject: { reference: `Patient/${patient.id}` },
        identifier: [{ system: 'urn:test:accession', value: 'S123' }], code: { coding: [{ system: 'http://loinc.org', code: loinc }] },
      });
    await order('718-7', 'active'); // HGB in the built-in code map
    await order('777-3', 'active'); // PLT
    await order('789-8', 'revoked'); // RBC, cancelled: sent with action C so the analyzer drops it
    await order('2345-7', 'active', 'stat'); // glucose, in no code map: its own code, priority S
    const [cfg] = parseSerialConfig({ ports: [{ name: 'xn550', path: pty.host, baudRate: 115200, protocol: 'astm', reconnectMs: 100 }] });
    running = startPort(cfg, { store: env.store, log: quiet, onAnswered: (e) => sent.push(e) });
    await until(() => running.port.isOpen, 'the facade to open the port');
    analyzer = new SerialPort({ path: pty.device, baudRate: 115200 });
    await new Promise<void>((resolve, reject) => analyzer.once('open', resolve).once('error', reject));
    analyzer.on('data', (chunk: Buffer) => {
      if (!sending) {
        instrument.feed(chunk);
        if (chunk.includes(0x04)) eots.push(); // EOT: the host gave the line back
        return;
      }
      for (const b of chunk) {
        if (waiter) waiter(b);
        else replies.push(b);
      }
    });
  }, 60_000);

  afterAll(async () => {
    await stopRig({ running, analyzer, pty, env, dir });
  });

  it('answers with the patient and the orders of the sample in instrument codes: new, stat and cancelled', async () => {
    const done = sent.next();
    const records = await query(['H|\\^&|||XN-550^00-22^11001|||||||P|1|20241101090000', 'Q|1|^S123||ALL||||||||O', 'L|1|N']);
    expect(records.map((r) => r[0])).toEqual(['H', 'P', 'O', 'O', 'O', 'L']);
    expect(records[0]!.slice(4, 14)).toEqual(['Conflux', '', '', '', '', 'xn550', '', 'P', '1', expect.stringMatching(/^\d{14}$/)]);
    expect(records[1]).toEqual(['P', '1', '', 'MRN-7', '', 'Doe^Jane', '', '19700102', 'F']);
    // O-2 sample, O-4 tests, O-5 priority, O-12 action, O-26 report type; numbered 1, 2, 3.
    expect(records.slice(2, 5).map((o) => o[1])).toEqual(['1', '2', '3']);
    const os = records.slice(2, 5).map((o) => ({ specimen: o[2], tests: o[4]!.split('\\').sort().join(' '), priority: o[5], action: o[11], type: o[25] }));
    expect(os.sort((a, b) => a.tests.localeCompare(b.tests))).toEqual([
      { specimen: 'S123', tests: '^^^2345-7', priority: 'S', action: 'N', type: 'O' },
      { specimen: 'S123', tests: '^^^HGB ^^^PLT', priority: 'R', action: 'N', type: 'O' },
      { specimen: 'S123', tests: '^^^RBC', priority: 'R', action: 'C', type: 'O' },
    ]);
    expect(records[5]).toEqual(['L', '1', 'N']);
    const logged = await done;
    expect(logged.ok).toBe(true);
    const m = await getMessage(env.db, logged.messageId);
    expect(m).toMatchObject({ channel: 'serial', direction: 'out', status: 'processed' });
    expect(m!.raw.toString('latin1')).toContain('S123');
  }, 30_000);

  it('contention: the analyzer answers the host\'s ENQ with its own; it goes first, the answer follows after its EOT', async () => {
    const answer = answers.next();
    const hostDone = eots.next();
    sending = true;
    expect(await sendSession(line, encodeMessage(['H|\\^&|||XN-550|||||||P|1|20241101091000', 'Q|1|^S123||ALL||||||||O', 'L|1|N']))).toEqual({ ok: true, naks: 0 });
    expect(await line.nextByte(10_000)).toBe(0x05); // the host bids to answer…
    // …and the analyzer bids too, with a message of its own: the host must yield and receive it.
    const own = await sendSession(line, encodeMessage(['H|\\^&|||XN-550|||||||P|1|20241101091001', 'L|1|N']));
    sending = false;
    expect(own).toEqual({ ok: true, naks: 0 });
    const records = parseRecords(await answer).records.map((r) => r.fields);
    await hostDone;
    expect(records.map((r) => r[0])).toEqual(['H', 'P', 'O', 'O', 'O', 'L']);
    expect(records[2]!.slice(0, 3)).toEqual(['O', '1', 'S123']);
    expect(running.handler.stats()).toMatchObject({ sent: 2 }); // this answer and the first test's: one each
  }, 30_000);

  it('answers "no information" (L|1|I) for a sample it has no orders for', async () => {
    const records = await query(['H|\\^&|||XN-550|||||||P|1|20241101090500', 'Q|1|^NOPE||ALL||||||||O', 'L|1|N']);
    expect(records.map((r) => r[0])).toEqual(['H', 'L']);
    expect(records[1]).toEqual(['L', '1', 'I']);
  }, 30_000);
});
