/**
 * The ASTM E1381 receiver's frame boundaries with the three line ends analyzers put after the checksum
 * (CR LF as LIS1-A says, CR alone, LF alone), whatever way the bytes are split across reads.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ACK, CR, ENQ, EOT, LF, NAK, decodeCapture, encodeFrame, encodeMessage, framesToText } from '../../facades/serial/astm/frame.js';
import { AstmReceiver, type ReceivedMessage } from '../../facades/serial/astm/link.js';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

// The analyzer captures are GPLv2 (senaite.astm), so they are not in test/fixtures: these run over the shared corpus.
noteCorpusAbsent();
const CORPUS = `${SHARED_DATA}/hl7v2/corpus/astm/`;
const ENDINGS = { 'CR LF': [CR, LF], CR: [CR], LF: [LF] } as const;

/** A frame with its CR LF replaced by `end`. */
export function withLineEnd(frame: Buffer, end: readonly number[]): Buffer {
  return Buffer.concat([frame.subarray(0, frame.length - 2), Buffer.from(end)]);
}

/** Records of a capture, framed as a conforming analyzer would (≤240 characters, ETB continuation frames). */
function captureFrames(file: string): { frames: Buffer[]; text: string } {
  const records = parseRecords(framesToText(decodeCapture(readFileSync(CORPUS + file)))).records.map((r) => r.raw);
  const frames = encodeMessage(records);
  return { frames, text: framesToText(decodeCapture(Buffer.concat(frames))) };
}

function receiver() {
  const written: number[] = [];
  const messages: ReceivedMessage[] = [];
  const incomplete: string[] = [];
  const r = new AstmReceiver({
    write: (b) => written.push(...b),
    onMessage: async (m) => void messages.push(m),
    onIncomplete: (_m, reason) => void incomplete.push(reason),
  });
  return { r, written, messages, incomplete };
}

/** Feeds `bytes` cut into reads: whole, one byte per read, or cut right after every CR (LF in the next read). */
function feedSplit(r: AstmReceiver, bytes: Buffer, split: 'one read' | 'byte by byte' | 'after each CR'): void {
  if (split === 'one read') return r.feed(bytes);
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (split === 'byte by byte' || bytes[i] === CR) {
      r.feed(bytes.subarray(start, i + 1));
      start = i + 1;
    }
  }
  if (start < bytes.length) r.feed(bytes.subarray(start));
}

describe.skipIf(!SHARED_DATA)('ASTM receiver: line end after the checksum (analyzer captures of the shared corpus)', () => {
  // Sysmex XN-550: many records, long ones split in ETB frames, frame numbers wrapping 7 → 0.
  const { frames, text } = SHARED_DATA ? captureFrames('senaite_sysmex_xn550.txt') : { frames: [], text: '' };

  for (const [name, end] of Object.entries(ENDINGS)) {
    for (const split of ['one read', 'byte by byte', 'after each CR'] as const) {
      it(`${name} frames, ${split}: every frame ACKed once, one message with the capture's records`, async () => {
        const { r, written, messages, incomplete } = receiver();
        const sent = frames.map((f) => withLineEnd(f, end));
        feedSplit(r, Buffer.concat([Buffer.from([ENQ]), ...sent, Buffer.from([EOT])]), split);
        await r.idle();
        r.close();
        expect(Buffer.from(written).toString('hex')).toBe(Buffer.alloc(frames.length + 1, ACK).toString('hex'));
        expect(incomplete).toEqual([]);
        expect(messages).toHaveLength(1);
        expect(messages[0].text).toBe(text);
        expect(r.stats).toMatchObject({ frames: frames.length, naks: 0, retransmissions: 0, messages: 1 });
        // The log keeps the bytes as sent; only a LF that arrived in a later read than its CR is not part of them.
        const expectedRaw = split !== 'one read' && name === 'CR LF' ? frames.map((f) => f.subarray(0, f.length - 1)) : sent;
        expect(messages[0].raw.equals(Buffer.concat(expectedRaw))).toBe(true);
      });
    }
  }

  it('a CR that ends a record inside the text does not end the frame; the CR after the checksum does', async () => {
    const { r, written, messages } = receiver();
    const f1 = withLineEnd(encodeFrame(1, 'H|\\^&\rP|1\r', false), [CR]);
    const f2 = withLineEnd(encodeFrame(2, 'O|1|S1\rL|1|N\r', true), [CR]);
    for (const b of Buffer.concat([Buffer.from([ENQ]), f1, f2, Buffer.from([EOT])])) r.feed(Buffer.from([b]));
    await r.idle();
    expect(written).toEqual([ACK, ACK, ACK]);
    expect(messages.map((m) => m.text)).toEqual(['H|\\^&\rP|1\rO|1|S1\rL|1|N\r']);
  });

  it('no line end after the checksum: NAK, and the retransmitted frame that follows is accepted', async () => {
    const { r, written, messages } = receiver();
    const f = encodeFrame(1, 'H|\\^&\rL|1|N\r', true);
    const bare = f.subarray(0, f.length - 2);
    r.feed(Buffer.concat([Buffer.from([ENQ]), bare]));
    r.feed(f); // the analyzer's retransmission, starting with STX where the line end belonged
    r.feed(Buffer.from([EOT]));
    await r.idle();
    expect(written).toEqual([ACK, NAK, ACK]);
    expect(messages.map((m) => m.text)).toEqual(['H|\\^&\rL|1|N\r']);
  });

  it('a line end where a checksum character belongs (checksum missing): NAK', async () => {
    const { r, written, messages } = receiver();
    const f = encodeFrame(1, 'H|\\^&\rL|1|N\r', true);
    const truncated = Buffer.concat([f.subarray(0, f.length - 4), Buffer.from([CR, LF])]);
    r.feed(Buffer.concat([Buffer.from([ENQ]), truncated, f, Buffer.from([EOT])]));
    await r.idle();
    expect(written).toEqual([ACK, NAK, ACK]);
    expect(messages).toHaveLength(1);
  });

  it('a bad checksum is still NAKed with CR-only and LF-only endings', async () => {
    for (const end of [[CR], [LF]]) {
      const { r, written } = receiver();
      const f = withLineEnd(encodeFrame(1, 'H|\\^&\r', false), end);
      f[f.length - 2] = f[f.length - 2] === 0x30 ? 0x31 : 0x30;
      r.feed(Buffer.concat([Buffer.from([ENQ]), f]));
      await r.idle();
      r.close();
      expect(written).toEqual([ACK, NAK]);
    }
  });
});
