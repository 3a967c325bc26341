/**
 * FHIR CRUD throughput over HTTP with 16 concurrent clients against a separate server process:
 * creates/s, reads/s, updates/s and the latency of 100-entry transactions.
 *   npm run bench -- fhir-crud [--creates N] [--reads N] [--updates N] [--transactions N] [--workers 1,2]
 * PGlite by default (one worker); PostgreSQL when DATABASE_URL is set, then once per WORKERS value (default 1 and 2).
 * Beside it, in the same run: pgbench doing a create's SQL (PostgreSQL only) and a bare node:http server answering a
 * stored Observation, and the ratios to them.
 */
import { bareHttpReads, pgbenchCreate } from './anchors.js';
import { percentiles, request, runConcurrent, startBenchServer } from './lib.js';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const CONCURRENCY = 16;
const creates = arg('creates', 5000);
const reads = arg('reads', 20000);
const updates = arg('updates', 3000);
const transactions = arg('transactions', 48);

function observation(i: number, patientId: string) {
  return {
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString(),
    valueQuantity: { value: 60 + (i % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  };
}

const anchors = {
  pgbenchCreatesPerSec: process.env.DATABASE_URL ? await pgbenchCreate(process.env.DATABASE_URL, CONCURRENCY) : undefined,
  bareHttpReadsPerSec: await bareHttpReads(reads, CONCURRENCY),
};
console.log(JSON.stringify({ anchors }, null, 2));

async function run(workers: number): Promise<void> {
  const server = await startBenchServer({ WORKERS: String(workers) });
  const fhir = `${server.url}/fhir`;
  try {
    const patient = JSON.parse((await request('POST', `${fhir}/Patient`, { resourceType: 'Patient', name: [{ family: 'Bench' }] })).body) as { id: string };
    const ids: string[] = [];
    const c = await runConcurrent(creates, CONCURRENCY, async (i) => {
      const r = await request('POST', `${fhir}/Observation`, observation(i, patient.id), { prefer: 'return=minimal' });
      if (r.status !== 201) throw new Error(`create: ${r.status} ${r.body}`);
      ids.push(/Observation\/([^/]+)\//.exec(r.headers.location as string)?.[1] as string);
    });
    const rd = await runConcurrent(reads, CONCURRENCY, async (i) => {
      const r = await request('GET', `${fhir}/Observation/${ids[(i * 7919) % ids.length]}`);
      if (r.status !== 200) throw new Error(`read: ${r.status}`);
    });
    const up = await runConcurrent(updates, CONCURRENCY, async (i) => {
      const id = ids[i % ids.length];
      const r = await request('PUT', `${fhir}/Observation/${id}`, { ...observation(i, patient.id), id, status: 'amended' }, { prefer: 'return=minimal' });
      if (r.status !== 200) throw new Error(`update: ${r.status} ${r.body}`);
    });
    const tx = await runConcurrent(transactions, CONCURRENCY, async (t) => {
      const entry = Array.from({ length: 100 }, (_, i) =>
        i === 0
          ? { fullUrl: `urn:uuid:p${t}`, resource: { resourceType: 'Patient', name: [{ family: `Tx${t}` }] }, request: { method: 'POST', url: 'Patient' } }
          : { resource: { ...observation(i, 'x'), subject: { reference: `urn:uuid:p${t}` } }, request: { method: 'POST', url: 'Observation' } },
      );
      const r = await request('POST', fhir, { resourceType: 'Bundle', type: 'transaction', entry }, { prefer: 'return=minimal' });
      if (r.status !== 200) throw new Error(`transaction: ${r.status} ${r.body.slice(0, 300)}`);
    });
    const rate = (n: number, ms: number) => Math.round((n * 1000) / ms);
    const result = {
      database: process.env.DATABASE_URL ? 'postgres' : 'pglite',
      workers,
      concurrency: CONCURRENCY,
      createsPerSec: rate(creates, c.ms),
      createLatencyMs: percentiles(c.latencies),
      readsPerSec: rate(reads, rd.ms),
      readLatencyMs: percentiles(rd.latencies),
      updatesPerSec: rate(updates, up.ms),
      updateLatencyMs: percentiles(up.latencies),
      transaction100LatencyMs: percentiles(tx.latencies, [50, 95]),
      serverPeakRssMb: server.peakRssMb(),
      createsVsPgbench: anchors.pgbenchCreatesPerSec ? +(rate(creates, c.ms) / anchors.pgbenchCreatesPerSec).toFixed(2) : undefined,
      readsVsBareHttp: +(rate(reads, rd.ms) / anchors.bareHttpReadsPerSec).toFixed(2),
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await server.stop();
  }
}

const workerList = (() => {
  const i = process.argv.indexOf('--workers');
  if (i > 0) return process.argv[i + 1]!.split(',').map(Number);
  return process.env.DATABASE_URL ? [1, 2] : [1];
})();
for (const w of workerList) await run(w);
