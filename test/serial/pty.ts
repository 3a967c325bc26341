import { type ChildProcess, spawn } from 'node:child_process';
import type { SerialPort } from 'serialport';
import type { RunningPort } from '../../facades/serial/index.js';
import { existsSync, rmSync } from 'node:fs';

/** A socat pseudo-terminal pair with stable symlinks: one end for the facade, one for the test's analyzer. */
export interface PtyPair {
  host: string;
  device: string;
  proc: ChildProcess;
  kill(): Promise<void>;
}

export async function ptyPair(host: string, device: string): Promise<PtyPair> {
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${host}`, `pty,raw,echo=0,link=${device}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (/starting data transfer loop/.test(err)) resolve();
    });
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`socat exited (${code}): ${err}`)));
  });
  if (!existsSync(host) || !existsSync(device)) throw new Error('socat did not create the pty links');
  return {
    host,
    device,
    proc,
    async kill() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** What a facade reports, in order: `push` from its callback, `next()` awaits the next unseen one. */
export function eventQueue<T>(): { push(e: T): void; next(): Promise<T> } {
  const events: T[] = [];
  let waiters: Array<() => void> = [];
  return {
    push(e) {
      events.push(e);
      const w = waiters;
      waiters = [];
      w.forEach((f) => f());
    },
    next() {
      return new Promise<T>((resolve) => {
        const n = events.length;
        const check = () => (events.length > n ? resolve(events[n]) : waiters.push(check));
        check();
      });
    },
  };
}

export { until } from '../helpers/until.js';

/** Tears a pty suite down in order: the facade's port, the analyzer's end, socat, the database, the pty links' folder. */
export async function stopRig(r: { running?: RunningPort; analyzer?: SerialPort; pty?: PtyPair; env?: { close(): Promise<void> }; dir?: string }): Promise<void> {
  r.running?.handler.close();
  await r.running?.port.stop();
  const analyzer = r.analyzer;
  if (analyzer?.isOpen) await new Promise((done) => analyzer.close(done));
  await r.pty?.kill();
  await r.env?.close();
  if (r.dir) rmSync(r.dir, { recursive: true, force: true });
}
