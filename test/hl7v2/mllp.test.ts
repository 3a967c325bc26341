/** MLLP framing and the listener's connection handling. */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frame, MllpDecoder } from '../../facades/hl7v2/mllp.js';
import { startMllpListener, type MllpListener } from '../../facades/hl7v2/inbound/listener.js';
import { startHarness, MllpClient, type Harness } from './harness.js';

function collect(max?: number) {
  const frames: string[] = [];
  const garbage: string[] = [];
  const oversize: number[] = [];
  const d = new MllpDecoder({ frame: (p) => frames.push(p.toString()), garbage: (g) => garbage.push(g.toString()), oversize: (n) => oversize.push(n) }, max);
  return { d, frames, garbage, oversize };
}

describe('MLLP framing', () => {
  it('splits pipelined frames in one chunk', () => {
    const { d, frames } = collect();
    d.push(Buffer.concat([frame('A1'), frame('B2'), frame('C3')]));
    expect(frames).toEqual(['A1', 'B2', 'C3']);
  });

  it('joins a frame split across chunks at every byte, including between FS and CR', () => {
    const all = Buffer.concat([frame('MSH|first'), frame('MSH|second')]);
    for (let cut = 1; cut < all.length; cut++) {
      const { d, frames } = collect();
      d.push(all.subarray(0, cut));
      d.push(all.subarray(cut));
      expect(frames, `cut at ${cut}`).toEqual(['MSH|first', 'MSH|second']);
    }
    const { d, frames } = collect();
    for (const b of all) d.push(Buffer.from([b]));
    expect(frames).toEqual(['MSH|first', 'MSH|second']);
  });

  it('discards and reports bytes outside a frame; a new VT restarts an unterminated frame', () => {
    const { d, frames, garbage } = collect();
    d.push(Buffer.from('noise'));
    d.push(frame('ok'));
    d.push(Buffer.from('\r\n'));
    d.push(Buffer.concat([Buffer.from([0x0b]), Buffer.from('lost'), frame('next')]));
    expect(frames).toEqual(['ok', 'next']);
    expect(garbage).toEqual(['noise', 'lost']);
  });

  it('drops a frame over the size limit and keeps reading the next one', () => {
    const { d, frames, oversize } = collect(10);
    d.push(frame('x'.repeat(50)));
    d.push(frame('small'));
    expect(frames).toEqual(['small']);
    expect(oversize).toHaveLength(1);
  });
});

describe('MLLP listener', () => {
  let h: Harness;
  let short: MllpListener;
  beforeAll(async () => {
    h = await startHarness('pglite');
    short = await startMllpListener(h.deps, { port: 0, host: '127.0.0.1', idleTimeoutMs: 200 });
  }, 60_000);
  afterAll(async () => {
    await short?.close();
    await h?.close();
  });

  it('closes an idle connection after the idle timeout', async () => {
    const c = await MllpClient.connect(short.port);
    expect(await c.waitFrames(1, 5000)).toEqual([]);
    expect(c.closed).toBe(true);
  });

  it('serves 16 concurrent connections, each with pipelined messages answered in order', async () => {
    const msg = (conn: number, i: number) => `MSH|^~\\&|S${conn}|F|R|F|20240101||ADT^A08^ADT_A01|C${conn}-${i}|P|2.5\rPID|1||P${conn}^^^HOSP^MR||N${conn}^G`;
    const clients = await Promise.all(Array.from({ length: 16 }, () => MllpClient.connect(h.listener.port)));
    clients.forEach((c, n) => c.writeRaw(Buffer.concat([0, 1, 2].map((i) => frame(msg(n, i))))));
    const replies = await Promise.all(clients.map((c) => c.waitFrames(3)));
    replies.forEach((r, n) => expect(r.map((a) => /MSA\|(\w+)\|([^\r|]+)/.exec(a)!.slice(1).join(' '))).toEqual([0, 1, 2].map((i) => `AA C${n}-${i}`)));
    clients.forEach((c) => c.end());
  });

  it('answers a frame with garbage before it', async () => {
    const s = net.connect(h.listener.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const got = new Promise<string>((resolve) => s.once('data', (b) => resolve(b.toString())));
    s.write(Buffer.concat([Buffer.from('junk\r\n'), frame('MSH|^~\\&|G|F|R|F|20240101||ADT^A08|G-1|P|2.5\rPID|1||G1^^^HOSP^MR')]));
    expect(await got).toContain('MSA|AA|G-1');
    s.end();
  });
});
