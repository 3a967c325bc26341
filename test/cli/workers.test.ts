/**
 * `serve` with WORKERS=2 on PostgreSQL, run as `npm start` runs it (the compiled build, a real child process): one
 * supervisor, two server processes sharing the HTTP and MLLP listeners, one server.json and admin token; what is
 * exactly-once with one process stays so with two; a killed worker is replaced; SIGTERM stops everything cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conflux, runProcess } from '../helpers/cli.js';
import { withSearchPath } from '../helpers/db.js';

const root = path.resolve(import.meta.dirname, '../..');
const databaseUrl = process.env.TEST_DATABASE_URL;
const cli = path.join(root, 'dist/src/cli.js');

/** The environment of a server under test: nothing from ours that configures Conflux. */
function serverEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = { ...process.env };
  for (const k of ['DATABASE_URL', 'WORKERS', 'PORT', 'MLLP_PORT', 'DICOM_PORT', 'HOST', 'BASE_URL', 'AUTH', 'DATA_DIR']) delete base[k];
  return { ...base, ...env };
}

/** The compiled build `npm start` runs (incremental: quick when `npm ci`'s prepare has built it). */
async function build(): Promise<void> {
  const r = await runProcess(path.join(root, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json'], process.env);
  if (r.code !== 0) throw new Error(`build failed:\n${r.stdout}${r.stderr}`);
}

interface Answer {
  status: number;
  body: any;
}

/** One request on a connection of its own, so that successive requests reach the workers in turn. */
function request(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** One MLLP exchange on a new connection: the ACK's text. */
function mllp(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(message, 'latin1'), Buffer.from([0x1c, 0x0d])])));
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\x1c\r')) {
        s.end();
        resolve(got);
      }
    });
    s.on('error', reject);
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('serve with WORKERS > 1', () => {
  it('refuses WORKERS=2 on the embedded database at start, naming WORKERS', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-workers-pglite-'));
    // From source: this needs no build and no PostgreSQL.
    const r = await conflux(['serve'], {}, serverEnv({ WORKERS: '2', DATA_DIR: dataDir, PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0' }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/WORKERS=2 needs PostgreSQL \(DATABASE_URL\)/);
    expect(existsSync(path.join(dataDir, 'server.json'))).toBe(false);
  });
});

describe.skipIf(!databaseUrl)('serve with WORKERS=2 on PostgreSQL (compiled build)', () => {
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-workers-'));
  let child: ChildProcess;
  let log = '';
  let base: string;
  let mllpPort: number;
  let adminToken: string;
  /** A SMART backend token (system/*.cruds), issued by whichever worker answered. */
  let token: string;
  const logEvents: Array<{ test: (log: string) => boolean; resolve: () => void }> = [];

  /** Resolves when the server's output shows `re` or passes `test` (now or later). */
  const logShows = (re: RegExp | ((log: string) => boolean)) =>
    new Promise<void>((resolve) => {
      const test = typeof re === 'function' ? re : (l: string) => re.test(l);
      if (test(log)) resolve();
      else logEvents.push({ test, resolve });
    });
  /** Pids of the workers the supervisor has reported serving so far. */
  const reportedServing = () => [...log.matchAll(/worker \d+ \(pid (\d+)\) serving/g)].map((m) => Number(m[1]));

  const health = async () => (await request(`${base}/healthz`)).body as { status: string; pid: number; worker?: number };

  /** Polls /healthz on fresh connections until every pid `want` accepts has answered; returns all pids seen. */
  async function pidsServing(want: (seen: Set<number>) => boolean): Promise<Set<number>> {
    const seen = new Set<number>();
    for (let i = 0; i < 400 && !want(seen); i++) {
      const h = await health().catch(() => undefined);
      if (h?.status === 'ok') seen.add(h.pid);
    }
    if (!want(seen)) throw new Error(`workers serving: ${[...seen].join(', ')}\n${log}`);
    return seen;
  }

  const fhir = (p: string, opts: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    request(`${base}/fhir/${p}`, {
      method: opts.method,
      headers: { authorization: `Bearer ${token}`, ...(opts.body ? { 'content-type': 'application/fhir+json' } : {}), ...opts.headers },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });

  beforeAll(async () => {
    await build();
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    // PORT=0: the supervisor picks the ports, so every worker listens on the same ones.
    const env = serverEnv({ DATABASE_URL: withSearchPath(databaseUrl!, schema), WORKERS: '2', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', HOST: '127.0.0.1', AUTH: 'on', DATA_DIR: dataDir });
    child = spawn(process.execPath, [cli, 'serve'], { cwd: root, env, stdio: 'pipe' });
    const onOutput = (d: Buffer) => {
      log += d.toString();
      for (const e of [...logEvents]) {
        if (!e.test(log)) continue;
        logEvents.splice(logEvents.indexOf(e), 1);
        e.resolve();
      }
    };
    child.stdout!.on('data', onOutput);
    child.stderr!.on('data', onOutput);
    const exited = new Promise<string>((r) => child.once('exit', (code) => r(`server exited (${code}) during start`)));
    const failed = await Promise.race([logShows(/2 workers serving/), exited]);
    if (failed) throw new Error(`${failed}:\n${log}`);

    const info = JSON.parse(readFileSync(path.join(dataDir, 'server.json'), 'utf8')) as { url: string; pid: number; adminToken: string; workers: number };
    expect(info.pid).toBe(child.pid);
    expect(info.workers).toBe(2);
    base = info.url;
    adminToken = info.adminToken;
    mllpPort = Number(/MLLP :(\d+)/.exec(log)![1]);

    // A SMART backend client registered through one worker; its token issued by one worker.
    const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
    const kid = randomUUID();
    const reg = await request(`${base}/admin/clients`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'workers test', scope: 'system/*.cruds', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES384' }] } }),
    });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    const clientId = reg.body.client_id as string;
    const discovery = (await request(`${base}/fhir/.well-known/smart-configuration`)).body as { token_endpoint: string };
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: discovery.token_endpoint, exp: now + 240, jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384', kid, typ: 'JWT' })
      .sign(privateKey);
    const tok = await request(`${base}${new URL(discovery.token_endpoint).pathname}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        scope: 'system/*.cruds',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    });
    expect(tok.status, JSON.stringify(tok.body)).toBe(200);
    token = tok.body.access_token as string;
  });

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  });

  it('serves from two processes, each taking the one admin token of server.json and the SMART tokens of the other', async () => {
    const pids = await pidsServing((s) => s.size >= 2);
    expect(pids.size).toBe(2);
    expect(pids.has(child.pid!)).toBe(false);
    const adminPids = new Set<number>();
    for (let i = 0; i < 50 && adminPids.size < 2; i++) {
      const r = await request(`${base}/admin/status`, { headers: { authorization: `Bearer ${adminToken}` } });
      expect(r.status).toBe(200);
      adminPids.add((r.body as { pid: number }).pid);
    }
    expect(adminPids).toEqual(pids);
    expect((await request(`${base}/admin/status`)).status).toBe(401);
    // The token was signed by one worker; every request below may reach either.
    for (let i = 0; i < 6; i++) expect((await fhir('Patient?_count=1')).status).toBe(200);
  });

  it('creates one resource for conditional creates racing on separate connections', async () => {
    const value = `race-${randomUUID()}`;
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        fhir('Patient', {
          method: 'POST',
          body: { resourceType: 'Patient', identifier: [{ system: 'urn:test:workers', value }] },
          headers: { 'if-none-exist': `identifier=urn:test:workers|${value}` },
        }),
      ),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    const found = await fhir(`Patient?identifier=urn:test:workers|${value}`);
    expect(found.body.entry).toHaveLength(1);
    expect(new Set(answers.map((a) => a.body.id))).toEqual(new Set([found.body.entry[0].resource.id]));
  });

  it('files an HL7 v2 message once, however often and on whichever worker it is resent', async () => {
    const message = (controlId: string, mrn: string) =>
      [`MSH|^~\\&|LAB|NORTH|CONFLUX|HOSP|20260101120000||ADT^A04^ADT_A01|${controlId}|P|2.5.1`, `PID|1||${mrn}^^^HOSP^MR||Workers^Test||19700101|F`].join('\r');
    const messageLog = async (controlId: string) => {
      const r = await request(`${base}/admin/messages?controlId=${controlId}`, { headers: { authorization: `Bearer ${adminToken}` } });
      return (Array.isArray(r.body) ? r.body : (r.body.messages ?? [])) as Array<{ status: string; attempts?: number }>;
    };

    // A sender that resends (lost ACK, reconnect): each resend on a new connection, which the supervisor hands to
    // the workers in turn.
    const controlId = `WK-${randomBytes(4).toString('hex')}`;
    const mrn = `WK-MRN-${randomBytes(4).toString('hex')}`;
    expect(await mllp(mllpPort, message(controlId, mrn))).toContain(`MSA|AA|${controlId}`);
    for (let i = 0; i < 4; i++) {
      const ack = await mllp(mllpPort, message(controlId, mrn));
      expect(ack).toContain(`MSA|AA|${controlId}`);
      expect(ack).toContain('duplicate');
    }
    expect((await fhir(`Patient?identifier=${mrn}`)).body.entry ?? []).toHaveLength(1);
    const rows = await messageLog(controlId);
    expect(rows).toHaveLength(1);
    expect(rows[0].status).toBe('processed');

    // Copies arriving at once, on both workers, while the first is still being filed: still one Patient.
    const controlId2 = `WK-${randomBytes(4).toString('hex')}`;
    const mrn2 = `WK-MRN-${randomBytes(4).toString('hex')}`;
    const acks = await Promise.all(Array.from({ length: 4 }, () => mllp(mllpPort, message(controlId2, mrn2))));
    for (const ack of acks) expect(ack).toContain(`MSA|AA|${controlId2}`);
    expect((await fhir(`Patient?identifier=${mrn2}`)).body.entry ?? []).toHaveLength(1);
    // …and one log row: the copies take turns on their sender and control id, the later ones see a duplicate.
    const copies = await messageLog(controlId2);
    expect(copies).toHaveLength(1);
    expect(copies[0]!.status).toBe('processed');
    expect(copies[0]!.attempts).toBe(4);
    expect(acks.filter((a) => a.includes('duplicate'))).toHaveLength(3);
  });

  it('replaces a worker killed with SIGKILL and goes on serving', async () => {
    const before = await pidsServing((s) => s.size >= 2);
    const victim = [...before][0];
    process.kill(victim, 'SIGKILL');
    await logShows(new RegExp(`\\(pid ${victim}\\) was killed by SIGKILL.*starting a new worker`));
    // The survivor serves meanwhile.
    expect((await health()).status).toBe('ok');
    await logShows(() => reportedServing().some((p) => !before.has(p)));
    const after = await pidsServing((s) => [...s].some((p) => !before.has(p)) && s.size >= 2);
    expect(after.has(victim)).toBe(false);
    expect(alive(victim)).toBe(false);
    const created = await fhir('Patient', { method: 'POST', body: { resourceType: 'Patient', name: [{ family: 'AfterRestart' }] } });
    expect(created.status).toBe(201);
  });

  it('stops every worker gracefully on SIGTERM to the supervisor and exits 0', async () => {
    const workers = await pidsServing((s) => s.size >= 2);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    for (const pid of workers) expect(alive(pid), `worker ${pid}`).toBe(false);
    expect(existsSync(path.join(dataDir, 'server.json'))).toBe(false);
    expect(log.match(/INFO \[server\] stopped/g)?.length).toBe(2);
  });
});
