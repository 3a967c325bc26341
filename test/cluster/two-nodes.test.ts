/**
 * Two Conflux nodes (separate processes, one node each as on separate hosts) on one PostgreSQL, with the blobs in the
 * database, behind a real HAProxy: traffic reaches both, and when one is killed with SIGKILL the other serves
 * everything — what was answered stays, nothing is written twice, and the sender's resend of an unanswered ORU is
 * taken once. docs/deploy.md; the multi-host version with network namespaces is `npm run cluster`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClusterNode, haproxyConfig, haproxyInstalled, type RunningHaproxy, startHaproxy } from '../../tools/haproxy.js';
import { repoRoot } from '../helpers/cli.js';
import { withSearchPath } from '../helpers/db.js';
import { freePort } from '../dicom/helpers.js';
import { kickoff, waitForManifest } from '../export/helpers.js';
import { MllpClient, msa } from '../hl7v2/harness.js';
import { until, untilUp } from '../helpers/until.js';

const databaseUrl = process.env.TEST_DATABASE_URL;

describe.skipIf(!databaseUrl || !haproxyInstalled())('two nodes behind HAProxy on one PostgreSQL', () => {
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const url = databaseUrl ? withSearchPath(databaseUrl, schema) : '';
  const nodes: Array<ClusterNode & { child?: ChildProcess }> = [];
  let haproxy: RunningHaproxy;
  let front: { host: string; http: number; mllp: number; dicom: number };
  let db: pg.Client;
  const base = () => `http://${front.host}:${front.http}`;

  const startNode = (n: ClusterNode) =>
    spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
      cwd: repoRoot,
      stdio: 'ignore',
      env: {
        ...process.env,
        DATABASE_URL: url,
        BLOB_STORE: 'postgres',
        WORKERS: '1',
        AUTH: 'off',
        PORT: String(n.httpPort),
        MLLP_PORT: String(n.mllpPort),
        DICOM_PORT: String(n.dicomPort),
        BASE_URL: base(),
        DATA_DIR: mkdtempSync(path.join(os.tmpdir(), `conflux-${n.name}-`)),
      },
    });

  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    db = new pg.Client({ connectionString: url });
    await db.connect();
    front = { host: '127.0.0.1', http: await freePort(), mllp: await freePort(), dicom: await freePort() };
    for (const name of ['node1', 'node2']) nodes.push({ name, host: '127.0.0.1', httpPort: await freePort(), mllpPort: await freePort(), dicomPort: await freePort() });
    // One node first: it migrates; the second finds the schema ready (both at once is test/db/migrate.test.ts).
    nodes[0].child = startNode(nodes[0]);
    await untilUp(`http://127.0.0.1:${nodes[0].httpPort}/healthz`);
    nodes[1].child = startNode(nodes[1]);
    await untilUp(`http://127.0.0.1:${nodes[1].httpPort}/healthz`);
    haproxy = await startHaproxy(haproxyConfig(front, nodes));
    await untilUp(`${base()}/healthz`);
  }, 60_000);

  afterAll(async () => {
    await haproxy?.stop();
    for (const n of nodes) {
      if (n.child && n.child.exitCode === null && n.child.signalCode === null) {
        const exited = new Promise((r) => n.child!.once('exit', r));
        n.child.kill('SIGTERM');
        await exited;
      }
    }
    await db?.end();
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  });

  const json = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base()}${p}`, { method, headers: body ? { 'content-type': 'application/fhir+json' } : {}, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  /** A GET on a connection of its own (fetch would keep reusing one). */
  const getOnNewConnection = (url: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get(url, { agent: false }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
  const healthzOnNewConnection = async () => JSON.parse((await getOnNewConnection(`${base()}/healthz`)).body) as { pid: number };
  const oru = (ctl: string, mrn: string) =>
    [
      `MSH|^~\\&|LAB|NORTH|CONFLUX|HOSP|20260101120000||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
      `PID|1||${mrn}^^^HOSP^MR||Cluster^Test||19700101|F`,
      `OBR|1||F-${ctl}^LAB|2345-7^Glucose^LN|||20260101110000`,
      'OBX|1|NM|2345-7^Glucose^LN||90|mg/dL^mg/dL^UCUM|70-99|N|||F',
    ].join('\r');
  const observationsOf = async (mrn: string) =>
    (await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation' AND NOT deleted AND content::jsonb #>> '{subject,reference}' IN
         (SELECT 'Patient/' || id FROM resource WHERE resource_type = 'Patient' AND content LIKE $1)`,
      [`%${mrn}%`],
    )).rows[0].n;

  it('spreads HTTP requests over both nodes, which share resources and blobs through the database', async () => {
    const created = await json('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'Shared' }] });
    expect(created.status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await json('GET', `/fhir/Patient/${created.body.id}`)).body.name[0].family).toBe('Shared');
    // In a row, so that round robin cannot hand every one of them to the same node.
    const pids = new Set<number>();
    for (let i = 0; i < 4; i++) pids.add((await healthzOnNewConnection()).pid);
    expect(pids.size).toBe(2);
    // An export: the job runs on whichever node claims it, its files go to the database blob store, and each file
    // is fetched on a connection of its own (so from both nodes in turn) and is whole.
    const manifest = await waitForManifest(await kickoff(`${base()}/fhir/$export?_type=Patient`));
    expect(manifest.output.length).toBeGreaterThan(0);
    for (let i = 0; i < 4; i++) {
      const file = await getOnNewConnection(manifest.output[0].url);
      expect(file.status).toBe(200);
      expect(file.body.trim().split('\n')).toHaveLength(manifest.output[0].count);
    }
  });

  it('takes HL7 v2 through HAProxy on either node, once', async () => {
    for (let i = 0; i < 4; i++) {
      const c = await MllpClient.connect(front.mllp);
      expect(msa(await c.request(oru(`CL-A-${i}`, `CL-MRN-A${i}`))).code).toBe('AA');
      c.end();
    }
    // A resend on another connection (perhaps the other node) is recognised as one.
    const c = await MllpClient.connect(front.mllp);
    expect(msa(await c.request(oru('CL-A-0', 'CL-MRN-A0'))).code).toBe('AA');
    c.end();
    expect(await observationsOf('CL-MRN-A0')).toBe(1);
  });

  it('when a node is killed, the other serves everything: nothing answered is lost, nothing is written twice', async () => {
    const before = await json('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'BeforeKill' }] });
    const victim = nodes[0];
    const gone = new Promise((r) => victim.child!.once('exit', r));
    victim.child!.kill('SIGKILL');
    await gone;
    // New connections to the dead node are refused; HAProxy sends them to the survivor (retry-on conn-failure), and
    // its health check takes the node out of rotation.
    await until(async () => {
      for (let i = 0; i < 6; i++) if ((await fetch(`${base()}/healthz`).catch(() => undefined))?.status !== 200) return false;
      return true;
    }, 'every request through HAProxy to succeed again');
    const after = await json('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'AfterKill' }] });
    expect(after.status).toBe(201);
    expect((await json('GET', `/fhir/Patient/${before.body.id}`)).body.name[0].family).toBe('BeforeKill');

    // The sender resends what it is not sure was taken; the survivor takes it once.
    for (const ctl of ['CL-B-1', 'CL-B-1', 'CL-A-1']) {
      const c = await MllpClient.connect(front.mllp);
      expect(msa(await c.request(oru(ctl, ctl === 'CL-A-1' ? 'CL-MRN-A1' : 'CL-MRN-B1'))).code).toBe('AA');
      c.end();
    }
    expect(await observationsOf('CL-MRN-B1')).toBe(1);
    expect(await observationsOf('CL-MRN-A1')).toBe(1);
    const patients = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Patient' AND content LIKE '%Kill%'")).rows[0].n;
    expect(patients).toBe(2);
  });
});
