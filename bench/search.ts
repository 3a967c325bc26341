/**
 * Search benchmark on PostgreSQL (DATABASE_URL). Loads N Observations across P Patients generated from the
 * Synthea shapes into a fresh schema, then reports p50/p95/p99 latency and queries/s for the queries of issue 3.
 *
 *   npx tsx bench/search.ts [--observations 1000000] [--patients 10000] [--iterations 300] [--concurrency 4]
 *                           [--schema bench_search] [--keep]
 */
import { randomUUID } from 'node:crypto';
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import { openDatabase } from '../src/db/open.js';
import { migrate } from '../src/db/migrate.js';
import type { Database } from '../src/db/database.js';
import { indexResource, patientCompartmentsOf, searchResources } from '../src/fhir/search/index.js';
import { syntheaResources } from '../test/search/helpers.js';

function arg(name: string, fallback: number): number;
function arg(name: string, fallback: string): string;
function arg(name: string, fallback: number | string): number | string {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  return typeof fallback === 'number' ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
const N_OBS = arg('observations', 1_000_000);
const N_PAT = arg('patients', Math.max(1, Math.min(10_000, Math.round(N_OBS / 100))));
const ITER = arg('iterations', 300);
const CONC = arg('concurrency', 4);
const SCHEMA = arg('schema', 'bench_search');
const KEEP = process.argv.includes('--keep');
const REUSE = process.argv.includes('--reuse');

const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL must point at a PostgreSQL database');
  process.exit(2);
}

// deterministic pseudo-random numbers, so runs are comparable
let seed = 42;
const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];

const synthea = syntheaResources();
const patientShapes = synthea.filter((r) => r.resourceType === 'Patient') as Patient[];
const obsShapes = synthea.filter((r) => r.resourceType === 'Observation') as Observation[];
const FAMILIES = [...new Set(patientShapes.flatMap((p) => p.name?.map((n) => n.family ?? '') ?? []))].filter(Boolean);
const GIVENS = [...new Set(patientShapes.flatMap((p) => p.name?.flatMap((n) => n.given ?? []) ?? []))];

function makePatient(i: number): Patient {
  const shape = structuredClone(pick(patientShapes));
  const id = randomUUID();
  shape.id = id;
  shape.name = [{ use: 'official', family: `${pick(FAMILIES)}${i % 97}`, given: [pick(GIVENS)] }];
  shape.identifier = [
    { system: 'https://github.com/synthetichealth/synthea', value: id },
    { system: 'http://hl7.org/fhir/sid/us-ssn', value: `999-${String(i).padStart(6, '0')}` },
  ];
  delete shape.text;
  return shape;
}

function makeObservation(patientId: string): Observation {
  const shape = structuredClone(pick(obsShapes));
  shape.id = randomUUID();
  shape.subject = { reference: `Patient/${patientId}` };
  delete shape.encounter;
  const t = Date.UTC(2000, 0, 1) + Math.floor(rnd() * 20 * 365.25 * 86400_000);
  shape.effectiveDateTime = new Date(t).toISOString();
  shape.issued = shape.effectiveDateTime;
  if (shape.valueQuantity?.value !== undefined) shape.valueQuantity.value = Math.round(shape.valueQuantity.value * (0.8 + rnd() * 0.4) * 100) / 100;
  return shape;
}

let seq = 0;
async function writeBatch(db: Database, resources: Resource[]): Promise<void> {
  await db.transaction(async (tx) => {
    const now = new Date().toISOString();
    const rows = resources.map((r) => {
      r.meta = { ...r.meta, versionId: '1', lastUpdated: now };
      return r;
    });
    await tx.query(
      `INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, compartments, seq)
       SELECT t, i, 1, $3::timestamptz, false, c, ARRAY(SELECT json_array_elements_text(cp::json)), s
       FROM unnest($1::text[], $2::text[], $4::text[], $5::text[], $6::bigint[]) AS x(t, i, c, cp, s)`,
      [
        rows.map((r) => r.resourceType),
        rows.map((r) => r.id),
        now,
        rows.map((r) => JSON.stringify(r)),
        rows.map((r) => JSON.stringify(patientCompartmentsOf(r))),
        rows.map(() => ++seq),
      ],
    );
    for (const r of rows) await indexResource(tx, r);
  });
}

async function load(db: Database): Promise<{ patients: Patient[]; obsPerSec: number }> {
  const patients: Patient[] = [];
  for (let i = 0; i < N_PAT; i++) patients.push(makePatient(i));
  for (let i = 0; i < patients.length; i += 500) await writeBatch(db, patients.slice(i, i + 500));
  const BATCH = 200;
  let next = 0;
  const t0 = performance.now();
  let lastReport = t0;
  const worker = async (): Promise<void> => {
    while (next < N_OBS) {
      const start = next;
      next += BATCH;
      const batch: Observation[] = [];
      for (let i = start; i < Math.min(N_OBS, start + BATCH); i++) batch.push(makeObservation(patients[i % patients.length].id!));
      await writeBatch(db, batch);
      const now = performance.now();
      if (now - lastReport > 10_000) {
        lastReport = now;
        console.log(`  loaded ${Math.min(next, N_OBS)} observations, ${Math.round((Math.min(next, N_OBS) / (now - t0)) * 1000)}/s`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONC }, worker));
  const obsPerSec = (N_OBS / (performance.now() - t0)) * 1000;
  return { patients, obsPerSec };
}

interface Stat {
  name: string;
  p50: number;
  p95: number;
  p99: number;
  qps: number;
  results: number;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(name: string, run: () => Promise<number>): Promise<Stat> {
  for (let i = 0; i < 20; i++) await run(); // warm up
  const lat: number[] = [];
  let results = 0;
  for (let i = 0; i < ITER; i++) {
    const t = performance.now();
    results += await run();
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  // throughput with CONC concurrent clients
  let done = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      while (done < ITER) {
        done++;
        await run();
      }
    }),
  );
  const qps = (ITER / (performance.now() - t0)) * 1000;
  return { name, p50: pct(lat, 50), p95: pct(lat, 95), p99: pct(lat, 99), qps, results: results / ITER };
}

async function main(): Promise<void> {
  const admin = await openDatabase({ databaseUrl: url, dataDir: null });
  if (!REUSE) {
    await admin.exec(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA}`);
  }
  await admin.close();
  const u = new URL(url!);
  u.searchParams.set('options', `-c search_path=${SCHEMA}`);
  const db = await openDatabase({ databaseUrl: u.toString(), dataDir: null });
  let patients: Patient[];
  if (!REUSE) {
    await migrate(db);
    console.log(`loading ${N_PAT} patients and ${N_OBS} observations into schema ${SCHEMA} (${CONC} writers)…`);
    const loaded = await load(db);
    patients = loaded.patients;
    console.log(`load: ${Math.round(loaded.obsPerSec)} observations/s (resource row + index rows, batches of 200, ${CONC} writers)`);
    const t = performance.now();
    await db.exec('VACUUM ANALYZE');
    console.log(`vacuum analyze: ${Math.round(performance.now() - t)} ms`);
  } else {
    const r = await db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'Patient' LIMIT 10000`);
    patients = r.rows.map((x) => JSON.parse(x.content) as Patient);
  }
  const sizes = await db.query<{ t: string; n: string; size: string }>(
    `SELECT relname AS t, n_live_tup::text AS n, pg_size_pretty(pg_total_relation_size(relid)) AS size
       FROM pg_stat_user_tables WHERE schemaname = $1 ORDER BY pg_total_relation_size(relid) DESC`,
    [SCHEMA],
  );
  for (const s of sizes.rows) console.log(`  ${s.t.padEnd(18)} ${s.n.padStart(10)} rows ${s.size}`);

  const base = 'http://bench/fhir';
  const run = async (type: string, params: Array<[string, string]>): Promise<number> => {
    const b = await searchResources(db, { resourceType: type, params, baseUrl: base, handling: 'strict' });
    return b.entry?.length ?? 0;
  };
  const codes = [...new Set(obsShapes.map((o) => o.code.coding?.[0]?.code))].filter(Boolean) as string[];
  const stats: Stat[] = [];
  stats.push(await measure('Observation?patient&code', () => run('Observation', [['patient', `Patient/${pick(patients).id}`], ['code', `http://loinc.org|${pick(codes)}`]])));
  stats.push(
    await measure('Observation?patient&date range', () => {
      const y = 2000 + Math.floor(rnd() * 18);
      return run('Observation', [['patient', pick(patients).id!], ['date', `ge${y}-01-01`], ['date', `lt${y + 2}-01-01`]]);
    }),
  );
  stats.push(await measure('Patient?name (prefix)', () => run('Patient', [['name', pick(patients).name![0].family!.slice(0, 4)]])));
  stats.push(await measure('Patient?identifier', () => run('Patient', [['identifier', `http://hl7.org/fhir/sid/us-ssn|${pick(patients).identifier![1].value}`]])));
  stats.push(
    await measure('Observation?patient&code&_include=subject', () =>
      run('Observation', [['patient', pick(patients).id!], ['code', pick(codes)], ['_include', 'Observation:subject']]),
    ),
  );
  stats.push(
    await measure('Observation?code&_include=subject (first 20)', () =>
      run('Observation', [['code', pick(codes)], ['_include', 'Observation:subject']]),
    ),
  );
  stats.push(
    await measure('Observation?patient&_sort=-date&_count=50 (all pages)', async () => {
      const pid = pick(patients).id!;
      let n = 0;
      for (let offset = 0; ; offset += 50) {
        const b = await searchResources(db, {
          resourceType: 'Observation',
          params: [['patient', pid], ['_sort', '-date'], ['_count', '50'], ['_offset', String(offset)]],
          baseUrl: base,
          handling: 'strict',
        });
        n += b.entry?.length ?? 0;
        if (!b.link?.some((l) => l.relation === 'next')) break;
      }
      return n;
    }),
  );
  stats.push(
    await measure('Observation?_sort=-date&_count=50 (first 3 pages, all patients)', async () => {
      let n = 0;
      for (let offset = 0; offset < 150; offset += 50) n += await run('Observation', [['_sort', '-date'], ['_count', '50'], ['_offset', String(offset)]]);
      return n;
    }),
  );
  console.log(`\nsearch on ${N_OBS} observations / ${N_PAT} patients, ${ITER} iterations (latency sequential, q/s with ${CONC} clients)`);
  console.log('| query | p50 ms | p95 ms | p99 ms | queries/s | entries/query |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const s of stats) {
    console.log(`| ${s.name} | ${s.p50.toFixed(2)} | ${s.p95.toFixed(2)} | ${s.p99.toFixed(2)} | ${Math.round(s.qps)} | ${s.results.toFixed(1)} |`);
  }
  await db.close();
  if (!KEEP) {
    const a = await openDatabase({ databaseUrl: url, dataDir: null });
    await a.exec(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await a.close();
  }
}

await main();
