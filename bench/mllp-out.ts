/**
 * HL7 v2 outbound (issue 7): messages/s delivered to a local MLLP peer that answers AA, and the time from
 * the write to the peer's ACK (p50/p99). PGlite always; PostgreSQL too when DATABASE_URL (or
 * TEST_DATABASE_URL) is set. The server runs in this process (the outbound worker starts with it).
 *
 *   npx tsx bench/mllp-out.ts [reports=1000] [obx-per-report=5]
 */
import { percentiles, request, runConcurrent, scratchSchema } from './lib.js';
import { loadConfig } from '../src/config.js';
import type { Database } from '../src/db/database.js';
import { openDatabase } from '../src/db/open.js';
import { migrate } from '../src/db/migrate.js';
import { startServer } from '../src/server.js';
import { outboundOf } from '../facades/hl7v2/outbound/index.js';
import { startPeer } from '../tools/mllp-peer.js';

const N = Number(process.argv[2] ?? 1000);
const OBX = Number(process.argv[3] ?? 5);

function report(i: number, tag: string) {
  const p = `urn:uuid:${crypto.randomUUID()}`;
  const obs = Array.from({ length: OBX }, (_, k) => ({
    fullUrl: `urn:uuid:${crypto.randomUUID()}`,
    resource: {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: `${1000 + k}-${k % 10}` }] },
      subject: { reference: p },
      valueQuantity: { value: i + k / 10, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
      referenceRange: [{ text: '1-10' }],
    },
    request: { method: 'POST', url: 'Observation' },
  }));
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { fullUrl: p, resource: { resourceType: 'Patient', identifier: [{ system: 'urn:bench', value: `${tag}-${i % 50}` }] }, request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=urn:bench|${tag}-${i % 50}` } },
      {
        fullUrl: `urn:uuid:${crypto.randomUUID()}`,
        resource: { resourceType: 'DiagnosticReport', status: 'final', identifier: [{ system: 'urn:bench:fill', value: `${tag}-${i}` }], code: { coding: [{ system: 'http://loinc.org', code: '24323-8' }] }, subject: { reference: p }, result: obs.map((o) => ({ reference: o.fullUrl })) },
        request: { method: 'POST', url: 'DiagnosticReport' },
      },
      ...obs,
    ],
  };
}

async function bench(kind: string, db: Database) {
  const peer = await startPeer();
  const ackAt = new Map<string, number>();
  const answer = peer.answer;
  peer.answer = (msg, i) => {
    ackAt.set(msg.getSegment('OBR')!.getField(3).getComponent(1), performance.now());
    return answer(msg, i);
  };
  const server = await startServer(await loadConfig({ AUTH: 'off', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: '/tmp/conflux-bench-outbound', HL7_OUTBOUND_POLL_MS: '50' }), { db });
  const rt = server.runtime;
  const outbound = outboundOf(rt);
  const admin = (method: string, path: string, body?: unknown) => request(method, `${server.url}/admin/outbound${path}`, body, { 'content-type': 'application/json' });
  await admin('POST', '/destinations', { name: 'bench', host: '127.0.0.1', port: peer.port, profile: 'generic', types: 'ORU' });
  await outbound.refresh();
  const fhir = `${server.url}/fhir`;

  // 1. Latency: one writer, one report after another (below the delivery rate, so no backlog builds up):
  //    write start → ACK at the peer.
  const L = Math.min(N, 300);
  const started = new Map<string, number>();
  await runConcurrent(L, 1, async (i) => {
    started.set(`lat-${i}`, performance.now());
    const r = await request('POST', fhir, report(i, 'lat'));
    if (r.status !== 200) throw new Error(`write failed ${r.status}: ${r.body.slice(0, 300)}`);
  });
  while (ackAt.size < L) await new Promise((r) => setTimeout(r, 20));
  const lat = [...started].map(([k, t]) => ackAt.get(k)! - t);

  // 2. Throughput: a backlog of N reports queued while paused, then drained by one worker.
  await admin('POST', '/destinations/bench/pause');
  await outbound.refresh();
  await runConcurrent(N, 8, async (i) => {
    const r = await request('POST', fhir, report(i, 'tp'));
    if (r.status !== 200) throw new Error(`write failed ${r.status}`);
  });
  const before = peer.received.length;
  const t0 = performance.now();
  await admin('POST', '/destinations/bench/resume');
  while (peer.received.length - before < N) await new Promise((r) => setTimeout(r, 10));
  const drainMs = performance.now() - t0;
  for (;;) {
    const c = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM hl7_outbox WHERE state <> 'delivered'");
    if (c.rows[0]!.n === 0) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const dup = peer.received.length - new Set(peer.received.map((r) => r.controlId)).size;
  console.log(
    `${kind.padEnd(8)} ORU^R01 with ${OBX} OBX: drain ${N} queued → ${(N / (drainMs / 1000)).toFixed(0)} msgs/s (one worker, one connection); ` +
      `write→ACK ${JSON.stringify(percentiles(lat, [50, 99]))} ms over ${L} reports written one after another; duplicates ${dup}`,
  );
  await outbound.stop();
  await server.stop();
  await peer.close();
}

const pglite = await openDatabase({ dataDir: null });
await migrate(pglite);
await bench('pglite', pglite);
await pglite.close();

const url = process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (url) {
  const scratch = await scratchSchema(url, 'bench_out');
  const db = await openDatabase({ databaseUrl: scratch.url, dataDir: null });
  await migrate(db);
  try {
    await bench('postgres', db);
  } finally {
    await db.close();
    await scratch.drop();
  }
}
process.exit(0);
