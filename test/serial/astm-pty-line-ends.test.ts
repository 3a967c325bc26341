/**
 * Analyzers that end ASTM frames with LF alone or CR alone after the checksum, played over a real socat pty
 * into the running serial port: every frame is ACKed first time, the results are filed to the associated
 * patient, and the message log keeps the bytes as the analyzer sent them.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SerialPort } from 'serialport';
import type { Observation } from '@medplum/fhirtypes';
import { getMessage } from '../../src/messages/message-log.js';
import { CR, LF, decodeCapture, encodeMessage, framesToText } from '../../facades/serial/astm/frame.js';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { type Line, sendSession } from '../../facades/serial/astm/sender.js';
import type { RunningPort } from '../../facades/serial/index.js';
import type { FilingResult } from '../../facades/serial/filing.js';
import type { TestEnv } from '../devices/helpers.js';
import { type PtyPair, eventQueue, stopRig } from './pty.js';
import { startAstmRig } from './rig.js';
import { noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

// The analyzer captures are GPLv2 (senaite.astm), so they are not in test/fixtures: these run over the shared corpus.
noteCorpusAbsent();
const CORPUS = `${SHARED_DATA}/hl7v2/corpus/astm/`;

/** The capture re-framed as the analyzer sends it, with `end` instead of CR LF after each checksum. */
function framesOf(file: string, end: number[]): Buffer[] {
  const text = framesToText(decodeCapture(readFileSync(CORPUS + file)));
  return encodeMessage(parseRecords(text).records.map((r) => r.raw)).map((f) => Buffer.concat([f.subarray(0, f.length - 2), Buffer.from(end)]));
}

interface Processed { messageId: string; result?: FilingResult; error?: string }

describe.skipIf(!SHARED_DATA)('ASTM over a real pty with CR-only and LF-only frame endings (analyzer captures of the shared corpus)', () => {
  let env: TestEnv;
  let dir: string;
  let pty: PtyPair;
  let running: RunningPort;
  let analyzer: SerialPort;
  let line: Line;
  let patient: string;
  const processed = eventQueue<Processed>();
  const nextEvent = () => processed.next();

  beforeAll(async () => {
    ({ env, dir, pty, running, analyzer, line, patient } = await startAstmRig({
      dirPrefix: 'conflux-serial-ends-', patientName: 'Line End Patient', deviceName: 'analyzer with odd line ends', onProcessed: (e) => processed.push(e),
    }));
  }, 60_000);

  afterAll(async () => {
    await stopRig({ running, analyzer, pty, env, dir });
  });

  // Different captures per ending: the same results twice would be dropped as exact duplicates.
  const cases: Array<[string, string, number[]]> = [
    ['LF only', 'senaite_cobas_c311.txt', [LF]],
    ['LF only', 'senaite_pentra_xlr.txt', [LF]],
    ['CR only', 'senaite_sysmex_xn550.txt', [CR]],
    ['CR only', 'senaite_dca_vantage.txt', [CR]],
  ];

  it.each(cases)('%s: plays %s, every frame ACKed without NAK, results filed to the associated patient', async (_label, file, end) => {
    const frames = framesOf(file, end);
    const done = nextEvent();
    expect(await sendSession(line, frames, { replyTimeoutMs: 10_000 })).toEqual({ ok: true, naks: 0 });
    const e = await done;
    expect(e.error).toBeUndefined();
    expect(e.result?.held).toEqual([]);
    expect(e.result?.filed).toBeGreaterThan(0);
    expect(e.result?.patientRefs).toEqual([patient]);
    const obsRef = e.result!.resourceRefs.find((r) => r.startsWith('Observation/'))!;
    const obs = await env.store.read<Observation>('Observation', obsRef.split('/')[1]);
    expect(obs.subject?.reference).toBe(patient);
    const logged = await getMessage(env.db, e.messageId);
    expect(logged?.status).toBe('processed');
    expect(logged?.raw.equals(Buffer.concat(frames))).toBe(true);
  }, 60_000);
});
