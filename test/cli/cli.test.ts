import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conflux, repoRoot as root } from '../helpers/cli.js';
import { untilUp } from '../helpers/until.js';

describe('conflux CLI', () => {
  it('migrate applies every migration once and prints one JSON document with --json', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-cli-'));
    const first = await conflux(['migrate', '--json'], { DATA_DIR: dataDir });
    expect(first.code, first.stderr).toBe(0);
    const out = JSON.parse(first.stdout) as { applied: string[]; database: string };
    expect(out.database).toBe('pglite');
    expect(out.applied).toContain('001_resources.sql');
    const again = JSON.parse((await conflux(['migrate', '--json'], { DATA_DIR: dataDir })).stdout) as { applied: string[] };
    expect(again.applied).toEqual([]);
  });

  it('serve runs on PGlite in DATA_DIR, the CLI reaches it over loopback with the admin token, SIGTERM stops it cleanly', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-serve-'));
    const port = 30000 + Math.floor(Math.random() * 20000);
    const env = { DATA_DIR: dataDir, PORT: String(port), MLLP_PORT: '0', DICOM_PORT: '0', AUTH: 'on' };
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], { cwd: root, env: { ...process.env, ...env }, stdio: 'pipe' });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await untilUp(`http://127.0.0.1:${port}/healthz`);
      const info = path.join(dataDir, 'server.json');
      expect(existsSync(info)).toBe(true);
      // The admin token grants the admin API: only the server's user may read it.
      expect(statSync(info).mode & 0o077).toBe(0);
      const token = (JSON.parse(readFileSync(info, 'utf8')) as { adminToken: string }).adminToken;
      expect(log).not.toContain(token);

      // With auth on, the FHIR API and the admin API refuse anonymous callers.
      expect((await fetch(`http://127.0.0.1:${port}/fhir/Patient/x`)).status).toBe(401);
      expect((await fetch(`http://127.0.0.1:${port}/admin/status`)).status).toBe(401);

      // A second process may not open the same embedded database.
      const second = await conflux(['migrate', '--json'], env);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`in use by process ${child.pid}`);

      const status = await conflux(['status', '--json'], env);
      expect(status.code, status.stderr).toBe(0);
      const s = JSON.parse(status.stdout) as { pid: number; database: string };
      expect(s.pid).toBe(child.pid);
      expect(s.database).toBe('pglite');

      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(info)).toBe(false);
      expect(log).toContain('stopped');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('runs admin commands in-process when no server is up', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-offline-'));
    const r = await conflux(['status', '--json'], { DATA_DIR: dataDir, MLLP_PORT: '0', DICOM_PORT: '0' });
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { pid: number }).pid).not.toBe(process.pid);
  });
});

/** The operator's commands against one running server, one group a test (each well within the 60 s a test gets). */
describe('conflux CLI operating a running server', () => {
  const port = 30000 + Math.floor(Math.random() * 20000);
  const mllpPort = port + 1;
  const dicomPort = port + 2;
  const env = { DATA_DIR: mkdtempSync(path.join(os.tmpdir(), 'conflux-dev-')), PORT: String(port), MLLP_PORT: String(mllpPort), DICOM_PORT: String(dicomPort), AUTH: 'off' };
  let child: ChildProcess;

  beforeAll(async () => {
    child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], { cwd: root, env: { ...process.env, ...env }, stdio: 'ignore' });
    await untilUp(`http://127.0.0.1:${port}/healthz`);
    const put = await fetch(`http://127.0.0.1:${port}/fhir/Patient/p-cli-1`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', id: 'p-cli-1' }),
    });
    expect(put.status).toBe(201);
  }, 60_000);
  afterAll(async () => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  });

  const send = (text: string) =>
    new Promise<string>((resolve, reject) => {
      const s = net.connect(mllpPort, '127.0.0.1', () => s.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(text), Buffer.from([0x1c, 0x0d])])));
      let got = '';
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('\x1c\r')) {
          s.end();
          resolve(got);
        }
      });
      s.on('error', reject);
    });
  const listed = (stdout: string) => {
    const out = JSON.parse(stdout) as { messages?: Array<{ id: string; status: string }> } | Array<{ id: string; status: string }>;
    return Array.isArray(out) ? out : (out.messages ?? []);
  };

  it('device add / associate / list / release', async () => {
    const added = await conflux(['device', 'add', '--name', 'Bed 4 monitor', '--serial-number', 'SN-123', '--json'], env);
    expect(added.code, added.stderr + added.stdout).toBe(0);
    const device = JSON.parse(added.stdout) as { id: string };
    expect(device.id).toBeTruthy();
    const assoc = await conflux(['device', 'associate', '--device', device.id, '--patient', 'p-cli-1', '--start', '2026-01-01T00:00:00Z', '--json'], env);
    expect(assoc.code, assoc.stdout).toBe(0);
    const list = await conflux(['device', 'list', '--json'], env);
    expect(list.stdout).toContain('SN-123');
    expect(list.stdout).toContain('p-cli-1');
    const released = await conflux(['device', 'release', '--device', device.id, '--json'], env);
    expect(released.code, released.stdout).toBe(0);
  });

  it('messages list / show / replay, and reindex', async () => {
    const msg = [
      'MSH|^~\\&|LAB|NORTH|CONFLUX|HOSP|20260101120000||ADT^A04^ADT_A01|CLI-1|P|2.5.1',
      'PID|1||CLI-MRN-1^^^HOSP^MR||Cli^Test||19700101|F',
    ].join('\r');
    expect(await send(msg)).toContain('MSA|AA|CLI-1');
    const list = await conflux(['messages', 'list', '--control-id', 'CLI-1', '--json'], env);
    expect(list.code, list.stderr + list.stdout).toBe(0);
    const rows = listed(list.stdout);
    expect(rows).toHaveLength(1);
    expect(rows[0].status).toBe('processed');
    const shown = await conflux(['messages', 'show', rows[0].id, '--json'], env);
    expect(shown.stdout).toContain('CLI-MRN-1');
    const replay = await conflux(['messages', 'replay', rows[0].id, '--json'], env);
    expect(replay.code, replay.stdout).toBe(0);
    // The whole store's search index rewritten: the patient and its results from CLI-1 at least.
    const reindexed = await conflux(['reindex', '--json'], env);
    expect(reindexed.code, reindexed.stderr + reindexed.stdout).toBe(0);
    expect((JSON.parse(reindexed.stdout) as { byType: Record<string, number> }).byType.Patient).toBeGreaterThan(0);
  });

  it('messages prune: by hand, finished messages older than the cut go', async () => {
    const bad = await conflux(['messages', 'prune', '--before', 'yesterday-ish', '--json'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/before must be an ISO date-time/);
    // The message of the test before and its replay are finished and older than the cut, so both go.
    const pruned = await conflux(['messages', 'prune', '--before', new Date(Date.now() + 60_000).toISOString(), '--json'], env);
    expect(pruned.code, pruned.stderr + pruned.stdout).toBe(0);
    expect((JSON.parse(pruned.stdout) as { deleted: number }).deleted).toBeGreaterThanOrEqual(2);
    expect(listed((await conflux(['messages', 'list', '--control-id', 'CLI-1', '--json'], env)).stdout)).toEqual([]);
  });

  it('messages resolve: an order number of another patient is refused, held, and decided by an operator', async () => {
    const oru = (ctl: string, mrn: string) =>
      [
        `MSH|^~\\&|LAB|NORTH|CONFLUX|HOSP|20260101120000||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
        `PID|1||${mrn}^^^HOSP^MR||Cli^Test||19700101|F`,
        'OBR|1||CLI-F1^LAB|2345-7^Glucose^LN|||20260101110000',
        'OBX|1|NM|2345-7^Glucose^LN||90|mg/dL^mg/dL^UCUM|70-99|N|||F',
      ].join('\r');
    expect(await send(oru('CLI-2', 'CLI-A'))).toContain('MSA|AA|CLI-2');
    expect(await send(oru('CLI-3', 'CLI-B'))).toContain('MSA|AE|CLI-3');
    const held = JSON.parse((await conflux(['messages', 'list', '--status', 'held', '--hold-kind', 'identity-conflict', '--json'], env)).stdout) as {
      messages: Array<{ id: string; controlId: string }>;
    };
    const heldId = held.messages.find((m) => m.controlId === 'CLI-3')!.id;
    const noNote = await conflux(['messages', 'resolve', heldId, '--action', 'reject', '--json'], env);
    expect(noNote.code).not.toBe(0);
    expect(noNote.stdout + noNote.stderr).toMatch(/needs a note/);
    const filed = await conflux(['messages', 'resolve', heldId, '--action', 'file-as-new', '--note', 'lab confirmed', '--json'], env);
    expect(filed.code, filed.stderr + filed.stdout).toBe(0);
    expect(JSON.parse(filed.stdout)).toMatchObject({ status: 'processed', resolution: expect.stringContaining('filed as new') });
  });

  /** With AUTH=off every listener (HTTP, MLLP, DIMSE) answers on loopback only, never on the machine's address. */
  it('with AUTH=off, listens on loopback only', async () => {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    const reach = (host: string, p: number) =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(p, host, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
    for (const p of [port, mllpPort, dicomPort]) {
      expect(await reach('127.0.0.1', p), `port ${p} on loopback`).toBe(true);
      if (external) expect(await reach(external, p), `port ${p} on ${external}`).toBe(false);
    }
  });
});

describe('conflux CLI usage', () => {
  it('rejects an unknown command with usage and exit code 2', async () => {
    const r = await conflux(['frobnicate'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command');
  });

  it('answers wrong use of a known command with exit code 2 and, under --json, the error and its code', async () => {
    const r = await conflux(['outbound', 'replay', 'some-id', '--all', '--json'], {});
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: 'outbound replay: give either a message id or --all, not both', code: 'usage' });
    expect(r.stderr).toContain('conflux: outbound replay: give either a message id or --all, not both');
  });
});
