/**
 * Defects found in a user walkthrough, each against a real MLLP peer and a real database:
 *  1. a write made with no server running (a CLI command run in-process, listen = false) still reaches
 *     the outbox in its own transaction, and a server started later delivers it;
 *  2. one FHIR transaction with an Observation entry BEFORE the DiagnosticReport that lists it sends one
 *     ORU (the report's); Observations queued from an earlier transaction are kept as 'superseded' with the reason;
 *  3. results that came in with MSH-11 T are not sent as production: skipped for a destination that did
 *     not opt in, sent with MSH-11 T to one that did (options.forwardNonProduction).
 * Every destination here filters both DiagnosticReport and Observation on its own lane, so a lone
 * Observation of another test never reaches it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BundleEntry } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { loadConfig } from '../../src/config.js';
import { startPlugins } from '../../src/plugins.js';
import { createRuntime } from '../../src/runtime.js';
import { makeLogger } from '../../src/facade.js';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { processPayload } from '../../facades/hl7v2/inbound/processor.js';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { FAST_ENV, labReport, outboxStates, startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';

const LANE = 'urn:test:lane';

function laneDestination(name: string, port: number, extra: Record<string, unknown> = {}) {
  return {
    name,
    host: '127.0.0.1',
    port,
    profile: 'generic',
    types: 'ORU',
    filter: [`DiagnosticReport?category=${LANE}|${name}`, `Observation?category=${LANE}|${name}`],
    ackTimeoutMs: 2000,
    retry: { initialDelayMs: 50, maxDelayMs: 200 },
    ...extra,
  };
}

/** labReport with the Observations also on the lane, optionally written before the report. */
function laneReport(mrn: string, lane: string, observationsFirst: boolean): BundleEntry[] {
  const entries = labReport(mrn, { category: lane });
  for (const e of entries) {
    if (e.resource?.resourceType === 'Observation') (e.resource as any).category = [{ coding: [{ system: LANE, code: lane }] }];
  }
  if (!observationsFirst) return entries;
  const [patient, ...rest] = entries;
  return [patient!, ...rest.filter((e) => e.resource?.resourceType === 'Observation'), ...rest.filter((e) => e.resource?.resourceType === 'DiagnosticReport')];
}

async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

const obxLines = (text: string) => text.split('\r').filter((s) => s.startsWith('OBX|'));
const idOf = (out: { entry?: BundleEntry[] }, i: number, type: string) => new RegExp(`${type}/([^/]+)`).exec(out.entry![i]!.response!.location!)![1]!;

describe.each(testDatabases())('HL7 v2 outbound walkthrough fixes on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: OutboundServer | undefined;
  const peers: Peer[] = [];
  const peer = async () => {
    const p = await startPeer();
    peers.push(p);
    return p;
  };

  beforeAll(async () => {
    const opened = await tdb.open();
    db = opened.db;
    drop = opened.drop;
  });
  afterAll(async () => {
    await server?.stop();
    for (const p of peers) await p.close();
    await drop?.();
  });

  it('1: a write made in-process without a server is queued in its transaction, and a later server sends it', async () => {
    const offlinePeer = await peer();
    // Exactly what a CLI command does when no server runs (src/cli.ts runAdminCommand): a runtime, its
    // plug-ins started with listen = false, the admin API called over a private HTTP listener.
    const rt = await createRuntime(await loadConfig({ AUTH: 'off', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: '/tmp/conflux-test', ...FAST_ENV }), { db });
    const facades = await startPlugins(rt, false);
    const httpServer = http.createServer(rt.app);
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
    const auth = { authorization: `Bearer ${rt.adminToken}` };
    try {
      const added = await postJson(`${base}/admin/outbound/destinations`, laneDestination('offline', offlinePeer.port), auth);
      expect(added.status, JSON.stringify(added.body)).toBe(201);
      const tx = await postJson(`${base}/fhir`, { resourceType: 'Bundle', type: 'transaction', entry: laneReport('OFF-1', 'offline', false) }, { ...auth, 'content-type': 'application/fhir+json' });
      expect(tx.status, JSON.stringify(tx.body)).toBe(200);
      // Committed with the write, and nobody in this process sends it.
      expect(await outboxStates(db, 'offline')).toEqual({ queued: 1 });
    } finally {
      await new Promise<void>((r) => httpServer.close(() => r()));
      for (const f of facades.reverse()) await f.stop();
      await rt.close();
    }
    expect(offlinePeer.received).toHaveLength(0);

    server = await startOutboundServer(db);
    await offlinePeer.waitFor(1);
    await until(async () => (await outboxStates(db, 'offline')).delivered === 1, 'the offline row delivered');
    expect(offlinePeer.received[0]!.text).toMatch(/^MSH\|[^\r]*\|ORU\^R01/);
    expect(obxLines(offlinePeer.received[0]!.text)).toHaveLength(2);
  }, 60_000);

  it('2: Observation before its DiagnosticReport in one transaction: one ORU, no standalone row', async () => {
    server ??= await startOutboundServer(db);
    const p = await peer();
    expect((await server.admin('POST', '/destinations', laneDestination('obsfirst', p.port))).status).toBe(201);
    const entries = laneReport('OBS-1', 'obsfirst', true);
    expect(entries.map((e) => e.resource?.resourceType)).toEqual(['Patient', 'Observation', 'Observation', 'DiagnosticReport']);
    const out = await server.transaction(entries);
    const reportId = idOf(out, 3, 'DiagnosticReport');
    // The transaction's writes land together, so the Observations' hooks already see the report that lists them.
    await until(async () => (await outboxStates(db, 'obsfirst')).delivered === 1, 'obsfirst delivered');
    expect(await outboxStates(db, 'obsfirst')).toEqual({ delivered: 1 });
    const rows = (await server.admin('GET', '/messages?destination=obsfirst')).body.messages as any[];
    expect(rows.map((r) => r.groupKey)).toEqual([`DiagnosticReport/${reportId}`]);
    expect(p.received).toHaveLength(1);
    const obx = obxLines(p.received[0]!.text);
    expect(obx).toHaveLength(2);
    expect(obx[0]).toMatch(/\|2823-3\^Potassium\^LN\|/);
  }, 60_000);

  it('2a: Observations queued from an earlier transaction are superseded by their report\'s ORU, not sent twice', async () => {
    server ??= await startOutboundServer(db);
    const p = await peer();
    expect((await server.admin('POST', '/destinations', laneDestination('obslater', p.port))).status).toBe(201);
    // Paused, the standalone rows of the first transaction stay queued until the report arrives.
    expect((await server.admin('POST', '/destinations/obslater/pause', {})).status).toBe(200);
    const [patient, o1, o2, report] = laneReport('OBS-2', 'obslater', true);
    const first = await server.transaction([patient!, o1!, o2!]);
    const obsIds = [1, 2].map((i) => idOf(first, i, 'Observation'));
    const patientRef = `Patient/${idOf(first, 0, 'Patient')}`;
    const r = report!.resource as any;
    const second = await server.transaction([
      { ...report!, resource: { ...r, subject: { reference: patientRef }, result: obsIds.map((id) => ({ reference: `Observation/${id}` })) } },
    ]);
    const reportId = idOf(second, 0, 'DiagnosticReport');
    expect((await server.admin('POST', '/destinations/obslater/resume', {})).status).toBe(200);

    // Every row of the lane reaches a final state; only then is "exactly one" a fact, not a wait.
    const rows = await until(async () => {
      const r = (await server!.admin('GET', '/messages?destination=obslater')).body.messages as any[];
      return r.length > 0 && r.every((m) => ['delivered', 'dead', 'superseded'].includes(m.state)) && r;
    }, 'obslater rows settled');
    const delivered = rows.filter((r) => r.state === 'delivered');
    const superseded = rows.filter((r) => r.state === 'superseded');
    expect(delivered).toHaveLength(1);
    expect(delivered[0].groupKey).toBe(`DiagnosticReport/${reportId}`);
    expect(superseded.map((r) => r.groupKey).sort()).toEqual(obsIds.map((id) => `Observation/${id}`).sort());
    for (const r of superseded) {
      expect(r.supersededBy).toBe(delivered[0].id);
      expect(r.lastError).toMatch(new RegExp(`DiagnosticReport/${reportId}`));
      expect(r.payload).toBeNull();
    }
    expect(p.received).toHaveLength(1);
    expect(obxLines(p.received[0]!.text)).toHaveLength(2);

    // Operators see it in the counts, and can still ask for the standalone message (built anew).
    const dest = (await server.admin('GET', '/destinations/obslater')).body;
    expect(dest.counts).toEqual({ queued: 0, sending: 0, delivered: 1, dead: 0, superseded: 2 });
    const replayed = await server.admin('POST', `/messages/${superseded[0].id}/replay`, {});
    expect(replayed.status).toBe(202);
    await p.waitFor(2);
    expect(p.received[1]!.text).toMatch(/OBX\|1\|NM\|/);
  }, 60_000);

  it('2b: Observation after its report (the usual order) is still one ORU and nothing superseded', async () => {
    server ??= await startOutboundServer(db);
    const p = await peer();
    expect((await server.admin('POST', '/destinations', laneDestination('reportfirst', p.port))).status).toBe(201);
    await server.transaction(laneReport('REP-1', 'reportfirst', false));
    await until(async () => (await outboxStates(db, 'reportfirst')).delivered === 1, 'reportfirst delivered');
    expect(await outboxStates(db, 'reportfirst')).toEqual({ delivered: 1 });
    expect(p.received).toHaveLength(1);
  }, 60_000);

  it('3: an inbound ORU with MSH-11 T is not forwarded as production; an opted-in destination gets MSH-11 T', async () => {
    server ??= await startOutboundServer(db);
    const prodPeer = await peer();
    const trainPeer = await peer();
    const filter = (panel: string) => ({ filter: [`DiagnosticReport?code=${panel}`, `Observation?code=${panel}X`] });
    expect((await server.admin('POST', '/destinations', laneDestination('prod', prodPeer.port, filter('TRN1')))).status).toBe(201);
    const opted = await server.admin('POST', '/destinations', laneDestination('training', trainPeer.port, { ...filter('TRN1'), options: { forwardNonProduction: 'true' } }));
    expect(opted.status, JSON.stringify(opted.body)).toBe(201);
    expect(opted.body.options.forwardNonProduction).toBe(true);
    const bad = await server.admin('POST', '/destinations', laneDestination('bad', 1, { options: { forwardNonProduction: 'yes' } }));
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/forwardNonProduction must be true or false/);

    const rt = server.runtime;
    const deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: { ...makeLogger('in'), info: () => undefined, warn: () => undefined } });
    const oru = (pid: string, n: number) =>
      [
        `MSH|^~\\&|LAB|HOSP|CONFLUX|CONFLUX|20240305101500||ORU^R01|PID-${pid}-${n}|${pid}|2.5.1`,
        `PID|1||TRN-MRN-${n}^^^HOSP^MR||Train^Tina||19800101|F`,
        `OBR|1|PL${n}^HIS|FL${n}^LAB|TRN1^Training panel^L|||20240305101500|||||||||||||||20240305101500|||F`,
        `OBX|1|NM|TRN1X^Training analyte^L||5.5|mmol/L|3.5-5.1|H|||F`,
      ].join('\r');

    const training = await processPayload(deps, Buffer.from(oru('T', 1), 'utf8'));
    expect(training.replies[0]).toMatch(/MSA\|AA\|/);
    // The hook ran in the inbound transaction, which has committed: what is not queued now never will be.
    expect(await outboxStates(db, 'prod')).toEqual({});
    await trainPeer.waitFor(1);
    const sent = trainPeer.received[0]!;
    expect(sent.msg.getSegment('MSH')!.getField(11)!.toString()).toBe('T');
    expect(obxLines(sent.text)[0]).toMatch(/\|TRN1X\^Training analyte\^/);

    const production = await processPayload(deps, Buffer.from(oru('P', 2), 'utf8'));
    expect(production.replies[0]).toMatch(/MSA\|AA\|/);
    await prodPeer.waitFor(1);
    expect(prodPeer.received[0]!.msg.getSegment('MSH')!.getField(11)!.toString()).toBe('P');
    await trainPeer.waitFor(2);
    expect(trainPeer.received[1]!.msg.getSegment('MSH')!.getField(11)!.toString()).toBe('P');
    expect(prodPeer.received).toHaveLength(1);
  }, 60_000);
});
