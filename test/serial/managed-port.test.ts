import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManagedPort } from '../../facades/serial/port.js';
import { parseSerialConfig } from '../../facades/serial/config.js';
import { ptyPair, type PtyPair, until } from './pty.js';
import { quiet } from './rig.js';

describe('ManagedPort over a real pty (socat)', () => {
  let pty: PtyPair | undefined;
  let port: ManagedPort | undefined;
  afterEach(async () => {
    await port?.stop();
    await pty?.kill();
  });

  // A pty whose far end dies reads as zero bytes forever with the port still "open"; only the watchdog notices.
  it('notices a device that vanished without an error, and reopens when it is back', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'conflux-port-'));
    pty = await ptyPair(path.join(dir, 'host'), path.join(dir, 'dev'));
    const [cfg] = parseSerialConfig({ ports: [{ name: 'p', path: pty.host, baudRate: 9600, protocol: 'astm', reconnectMs: 100 }] });
    port = new ManagedPort(cfg, () => undefined, quiet);
    port.start();
    await until(() => port!.isOpen, 'the first open');
    expect(port.opens).toBe(1);
    await pty.kill();
    await until(() => !port!.isOpen, 'the port to be seen as gone');
    pty = await ptyPair(pty.host, pty.device);
    await until(() => port!.isOpen && port!.opens === 2, 'the reopen');
  }, 30_000);
});
