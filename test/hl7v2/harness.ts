/** A real Conflux runtime (PGlite or PostgreSQL) with the HL7 v2 inbound listener on an ephemeral port, and an MLLP client. */
import net from 'node:net';
import { loadConfig } from '../../src/config.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { makeLogger } from '../../src/facade.js';
import { frame, MllpDecoder } from '../../facades/hl7v2/mllp.js';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { startMllpListener, type MllpListener } from '../../facades/hl7v2/inbound/listener.js';
import type { ProcessorDeps } from '../../facades/hl7v2/inbound/processor.js';
import { openTestDb, type TestDb } from './test-db.js';

export interface Harness {
  rt: Runtime;
  deps: ProcessorDeps;
  listener: MllpListener;
  close(): Promise<void>;
}

const quiet = { info: () => undefined, warn: () => undefined, error: (m: string) => makeLogger('hl7v2-test').error(m) };

export async function startHarness(kind: 'pglite' | 'postgres', tweak?: (d: ProcessorDeps) => void): Promise<Harness> {
  const t: TestDb = await openTestDb(kind);
  const config = await loadConfig({ AUTH: 'off', DATA_DIR: '/tmp/conflux-hl7-test', PORT: '0' });
  const rt = await createRuntime(config, { db: t.db });
  const deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: quiet });
  tweak?.(deps);
  const listener = await startMllpListener(deps, { port: 0, host: '127.0.0.1', maxMessageBytes: 2 * 1024 * 1024, idleTimeoutMs: 60_000 });
  const h: Harness = {
    rt,
    deps,
    listener,
    close: async () => {
      await h.listener.close();
      await t.close();
    },
  };
  return h;
}

/** A connected MLLP client that collects reply frames. */
export class MllpClient {
  private frames: string[] = [];
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(readonly socket: net.Socket) {
    const dec = new MllpDecoder({ frame: (p) => { this.frames.push(p.toString('utf8')); this.waiters.splice(0).forEach((w) => w()); } });
    socket.on('data', (c) => dec.push(c));
    socket.on('close', () => { this.closed = true; this.waiters.splice(0).forEach((w) => w()); });
    socket.on('error', () => undefined);
  }
  static connect(port: number): Promise<MllpClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new MllpClient(s)));
      s.setNoDelay(true);
      s.once('error', reject);
    });
  }
  writeRaw(b: Buffer | string): void {
    this.socket.write(b);
  }
  send(payload: Buffer | string): void {
    this.socket.write(frame(typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload));
  }
  /** Waits until `n` frames have arrived in total, or the connection closed; returns them. */
  async waitFrames(n: number, timeoutMs = 30_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < n && !this.closed) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} MLLP frames (got ${this.frames.length})`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 200); });
    }
    return this.frames.slice(0, n);
  }
  take(): string[] {
    return this.frames.splice(0);
  }
  async request(payload: Buffer | string): Promise<string> {
    const before = this.frames.length;
    this.send(payload);
    const f = await this.waitFrames(before + 1);
    return f[before]!;
  }
  end(): void {
    this.socket.end();
  }
}

export function segments(ack: string): string[][] {
  return ack.split('\r').filter(Boolean).map((s) => s.split('|'));
}
export function msa(ack: string): { code: string; controlId: string; text: string } {
  const s = segments(ack).find((x) => x[0] === 'MSA') ?? [];
  return { code: s[1] ?? '', controlId: s[2] ?? '', text: s[3] ?? '' };
}
export function errText(ack: string): string {
  return segments(ack).filter((x) => x[0] === 'ERR').map((x) => x.slice(1).join('|')).join(' // ');
}
