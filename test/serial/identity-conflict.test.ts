/**
 * Identity conflicts over a real pty (socat) and a real database (docs/design.md principle 5, issue 20): an ASTM report
 * whose sample id already belongs to another patient is not filed (before, its results were taken for
 * duplicates and the new patient's result was lost); the message is held as an identity conflict, the other
 * patient's results stay as they were, same-patient resends and corrections still file, and an operator files
 * the held message as new for its own patient or rejects it.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SerialPort } from 'serialport';
import type { Bundle, DiagnosticReport, Observation, Patient } from '@medplum/fhirtypes';
import { getMessage, registerHeldFiling, resolveHeldMessage } from '../../src/index.js';
import { encodeMessage } from '../../facades/serial/astm/frame.js';
import { type Line, sendSession } from '../../facades/serial/astm/sender.js';
import { parseSerialConfig } from '../../facades/serial/config.js';
import type { FilingResult } from '../../facades/serial/filing.js';
import { fileHeldAsNew, startPort, type RunningPort } from '../../facades/serial/index.js';
import { databases, openTestEnv, type TestEnv } from '../devices/helpers.js';
import { eventQueue, ptyPair, type PtyPair, stopRig, until } from './pty.js';
import { openAnalyzer, quiet } from './rig.js';

const MRN = 'urn:oid:1.2.3.4.99.mrn';
interface Processed { messageId: string; result?: FilingResult; error?: string }

/** One ASTM message: a glucose on sample S-77 for the patient with MRN `pid`. */
function report(pid: string, glucose: number): Buffer[] {
  return encodeMessage([
    'H|\\^&|||ChemAnalyzer^1.0|||||||P|1394-97|20261201100000',
    `P|1||${pid}`,
    'O|1|S-77||^^^GLU|R||20261201093000',
    `R|1|^^^GLU|${glucose}|mg/dL||N||F||||20261201095000`,
    'L|1|N',
  ]);
}

describe.each(databases)('ASTM identity conflicts on %s', (kind) => {
  let env: TestEnv;
  let dir: string;
  let pty: PtyPair;
  let running: RunningPort;
  let analyzer: SerialPort;
  let line: Line;
  let patientA: string;
  let patientB: string;
  const processed = eventQueue<Processed>();

  /** Sends one message through E1381 and waits until the facade has logged and filed (or held) it. */
  async function send(frames: Buffer[]): Promise<Processed> {
    const done = processed.next();
    expect(await sendSession(line, frames, { replyTimeoutMs: 10_000 })).toEqual({ ok: true, naks: 0 });
    return done;
  }
  const search = async <T extends Observation | DiagnosticReport>(type: T['resourceType'], patient: string) => {
    const b = (await env.rt.router.handle({ method: 'GET', path: type, query: [['subject', patient]], headers: {}, access: (await import('../../src/index.js')).systemAccess('test') })).resource as Bundle<T>;
    return (b.entry ?? []).map((e) => e.resource!);
  };
  const glucoseOf = (o: Observation) => o.valueQuantity?.value;

  beforeAll(async () => {
    env = await openTestEnv(kind);
    dir = mkdtempSync(path.join(tmpdir(), 'conflux-serial-identity-'));
    pty = await ptyPair(path.join(dir, 'host'), path.join(dir, 'analyzer'));
    const mk = async (mrn: string) => `Patient/${(await env.store.create<Patient>({ resourceType: 'Patient', identifier: [{ system: MRN, value: mrn }] })).id}`;
    patientA = await mk('AAA1');
    patientB = await mk('BBB2');
    const [cfg] = parseSerialConfig({
      ports: [{ name: 'chem', path: pty.host, baudRate: 115200, protocol: 'astm', timeZone: 'UTC', patientIdentifierSystem: MRN, reconnectMs: 100, receiveTimeoutMs: 4000 }],
    });
    running = startPort(cfg!, { store: env.store, log: quiet, onProcessed: (e) => processed.push(e) });
    // What the facade's start registers for its ports (startPort alone does not).
    registerHeldFiling(['serial'], (tx, m) => fileHeldAsNew(env.store, [cfg!], tx, m));
    await until(() => running.port.isOpen, 'the facade to open the port');
    ({ analyzer, line } = await openAnalyzer(pty.device));
  }, 60_000);

  afterAll(async () => {
    await stopRig({ running, analyzer, pty, env, dir });
  });

  let first: Observation;
  let heldSame: string;
  let heldOther: string;

  it('files patient A’s glucose on sample S-77', async () => {
    const e = await send(report('AAA1', 90));
    expect(e.result).toMatchObject({ filed: 1, held: [], duplicates: 0, patientRefs: [patientA] });
    [first] = await search<Observation>('Observation', patientA);
    expect(glucoseOf(first!)).toBe(90);
  });

  it('holds patient B’s identical report as an identity conflict and leaves A’s result as it was', async () => {
    const e = await send(report('BBB2', 90));
    expect(e.result?.filed).toBe(0);
    expect(e.result?.duplicates).toBe(0);
    expect(e.result?.held).toEqual(['identity-conflict:0']);
    const m = (await getMessage(env.db, e.messageId))!;
    expect(m).toMatchObject({ status: 'held', holdKind: 'identity-conflict' });
    expect(m.error).toMatch(/specimen id S-77 \(O record\) already belongs to another patient \(urn:oid:1\.2\.3\.4\.99\.mrn\|AAA1\)/);
    heldSame = e.messageId;
    const [after] = await search<Observation>('Observation', patientA);
    expect(after).toEqual(first);
    expect(await search<Observation>('Observation', patientB)).toEqual([]);
  });

  it('holds patient B’s report with another value on the same sample id too', async () => {
    const e = await send(report('BBB2', 250));
    expect(e.result?.held).toEqual(['identity-conflict:0']);
    expect((await getMessage(env.db, e.messageId))!).toMatchObject({ status: 'held', holdKind: 'identity-conflict' });
    heldOther = e.messageId;
    expect(await search<Observation>('Observation', patientB)).toEqual([]);
    expect((await search<Observation>('Observation', patientA)).map(glucoseOf)).toEqual([90]);
  });

  it('still takes patient A’s resend (a duplicate) and correction on the same sample', async () => {
    const resend = await send(report('AAA1', 90));
    expect(resend.result).toMatchObject({ filed: 1, held: [], duplicates: 1 });
    expect((await getMessage(env.db, resend.messageId))!.status).toBe('processed');
    const corrected = await send(report('AAA1', 95));
    expect(corrected.result).toMatchObject({ filed: 1, held: [], duplicates: 0 });
    expect((await search<Observation>('Observation', patientA)).map(glucoseOf).sort()).toEqual([90, 95]);
  });

  it('files a held report as new for patient B on an operator’s decision, leaving A’s results untouched', async () => {
    const deps = { db: env.db, repo: env.rt.repo };
    const done = await resolveHeldMessage(deps, heldOther, { action: 'file-as-new', who: 'Practitioner/op1', note: 'tube relabelled; B is right' });
    expect(done).toMatchObject({ status: 'processed', holdKind: 'identity-conflict', patientRefs: [patientB] });
    expect(done.resolution).toMatch(/^filed as new by Practitioner\/op1/);
    expect((await search<Observation>('Observation', patientB)).map(glucoseOf)).toEqual([250]);
    const [reportB] = await search<DiagnosticReport>('DiagnosticReport', patientB);
    expect(reportB!.identifier).toContainEqual({ type: { text: 'specimen id' }, value: 'S-77' });
    expect((await search<Observation>('Observation', patientA)).map(glucoseOf).sort()).toEqual([90, 95]);
    expect((await search<Observation>('Observation', patientA)).find((o) => o.id === first.id)).toEqual(first);
    // B now has its own report on S-77: B's resend is a duplicate of B's, not a conflict.
    const resend = await send(report('BBB2', 250));
    expect(resend.result).toMatchObject({ filed: 1, held: [], duplicates: 1 });
  });

  it('rejects the other held message with a note; nothing is filed', async () => {
    const done = await resolveHeldMessage({ db: env.db, repo: env.rt.repo }, heldSame, { action: 'reject', who: 'Practitioner/op1', note: 'duplicate run on the wrong patient' });
    expect(done).toMatchObject({ status: 'error' });
    expect(done.resolution).toMatch(/^rejected by Practitioner\/op1/);
    expect((await search<Observation>('Observation', patientB)).map(glucoseOf)).toEqual([250]);
  });
});
