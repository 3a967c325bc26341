/**
 * The setup the ASTM pty suites share: a socat pty pair, the serial facade's ASTM port on one end, an analyzer
 * (a plain SerialPort and its E1381 line) on the other, and a device on that port associated with a new patient.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SerialPort } from 'serialport';
import { addDevice, associate } from '../../src/devices/index.js';
import { type Line, streamLine } from '../../facades/serial/astm/sender.js';
import { parseSerialConfig } from '../../facades/serial/config.js';
import { startPort, type RunningPort } from '../../facades/serial/index.js';
import type { HandlerDeps } from '../../facades/serial/session.js';
import { openTestEnv, type TestEnv } from '../devices/helpers.js';
import { afterAll, beforeAll, expect } from 'vitest';
import type { Observation } from '@medplum/fhirtypes';
import { eventQueue, ptyPair, type PtyPair, stopRig, until } from './pty.js';

export const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
export const who = { who: 'Practitioner/op1' };

export interface AstmRig {
  env: TestEnv;
  dir: string;
  pty: PtyPair;
  running: RunningPort;
  analyzer: SerialPort;
  line: Line;
  patient: string;
}

/** Opens the analyzer's end of the pty. */
export async function openAnalyzer(device: string): Promise<{ analyzer: SerialPort; line: Line }> {
  const analyzer = new SerialPort({ path: device, baudRate: 115200 });
  await new Promise<void>((resolve, reject) => analyzer.once('open', resolve).once('error', reject));
  return { analyzer, line: streamLine(analyzer) };
}

export async function startAstmRig(o: { dirPrefix: string; patientName: string; deviceName: string; onProcessed: HandlerDeps['onProcessed'] }): Promise<AstmRig> {
  const env = await openTestEnv('pglite');
  const dir = mkdtempSync(path.join(tmpdir(), o.dirPrefix));
  const pty = await ptyPair(path.join(dir, 'host'), path.join(dir, 'analyzer'));
  const patient = await env.patient(o.patientName);
  const dev = await addDevice(env.store, { name: o.deviceName, port: pty.host }, who);
  await associate(env.store, { device: dev.reference, patient, start: '2000-01-01T00:00:00Z' }, who);
  const [cfg] = parseSerialConfig({ ports: [{ name: 'lab', path: pty.host, baudRate: 115200, protocol: 'astm', timeZone: 'Europe/Berlin', reconnectMs: 100, receiveTimeoutMs: 4000 }] });
  const running = startPort(cfg, { store: env.store, log: quiet, onProcessed: o.onProcessed });
  await until(() => running.port.isOpen, 'the facade to open the port');
  return { env, dir, pty, running, patient, ...(await openAnalyzer(pty.device)) };
}

export type Processed = Parameters<NonNullable<HandlerDeps['onProcessed']>>[0];

/**
 * A rig for one suite: started before its first test, stopped after its last. Tests read (and, reconnecting, replace)
 * `rig.pty`, `rig.analyzer`, `rig.line`…, and wait for the facade's next processed message with `nextEvent()`.
 */
export function suiteAstmRig(o: { dirPrefix: string; patientName: string; deviceName: string }): { rig: AstmRig; nextEvent(): Promise<Processed> } {
  const processed = eventQueue<Processed>();
  const rig = {} as AstmRig;
  beforeAll(async () => {
    Object.assign(rig, await startAstmRig({ ...o, onProcessed: (e) => processed.push(e) }));
  }, 60_000);
  afterAll(async () => {
    await stopRig(rig);
  });
  return { rig, nextEvent: () => processed.next() };
}

/** Asserts that a processed message filed its results, all held for nobody, to the rig's patient, from its device; returns an Observation. */
export async function expectFiledToPatient(rig: AstmRig, e: Processed): Promise<Observation> {
  expect(e.error).toBeUndefined();
  expect(e.result?.held).toEqual([]);
  expect(e.result?.filed).toBeGreaterThan(0);
  expect(e.result?.patientRefs).toEqual([rig.patient]);
  const obsRef = e.result!.resourceRefs.find((r) => r.startsWith('Observation/'))!;
  const obs = await rig.env.store.read<Observation>('Observation', obsRef.split('/')[1]!);
  expect(obs.subject?.reference).toBe(rig.patient);
  return obs;
}
