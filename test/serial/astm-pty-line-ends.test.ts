/**
 * Analyzers that end ASTM frames with LF alone or CR alone after the checksum, played over a real socat pty
 * into the running serial port: every frame is ACKed first time, the results are filed to the associated
 * patient, and the message log keeps the bytes as the analyzer sent them.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { getMessage } from '../../src/messages/message-log.js';
import { CR, LF, decodeCapture, encodeMessage, framesToText } from '../../facades/serial/astm/frame.js';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { sendSession } from '../../facades/serial/astm/sender.js';
import { expectFiledToPatient, suiteAstmRig } from './rig.js';
import { noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

// The analyzer captures are GPLv2 (senaite.astm), so they are not in test/fixtures: these run over the shared corpus.
noteCorpusAbsent();
const CORPUS = `${SHARED_DATA}/hl7v2/corpus/astm/`;

/** The capture re-framed as the analyzer sends it, with `end` instead of CR LF after each checksum. */
function framesOf(file: string, end: number[]): Buffer[] {
  const text = framesToText(decodeCapture(readFileSync(CORPUS + file)));
  return encodeMessage(parseRecords(text).records.map((r) => r.raw)).map((f) => Buffer.concat([f.subarray(0, f.length - 2), Buffer.from(end)]));
}


describe.skipIf(!SHARED_DATA)('ASTM over a real pty with CR-only and LF-only frame endings (analyzer captures of the shared corpus)', () => {
  const { rig, nextEvent } = suiteAstmRig({ dirPrefix: 'conflux-serial-ends-', patientName: 'Line End Patient', deviceName: 'analyzer with odd line ends' });

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
    expect(await sendSession(rig.line, frames, { replyTimeoutMs: 10_000 })).toEqual({ ok: true, naks: 0 });
    const e = await done;
    await expectFiledToPatient(rig, e);
    const logged = await getMessage(rig.env.db, e.messageId);
    expect(logged?.status).toBe('processed');
    expect(logged?.raw.equals(Buffer.concat(frames))).toBe(true);
  }, 60_000);
});
