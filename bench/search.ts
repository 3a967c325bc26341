/**
 * Search benchmark on PostgreSQL (DATABASE_URL). Loads N Observations across P Patients generated from the
 * Synthea shapes into a fresh schema, then reports p50/p95/p99 latency and queries/s for the queries of issue 3.
 *
 *   npx tsx bench/search.ts [--observations 1000000] [--patients 10000] [--iterations 300] [--concurrency 4]
 *                           [--schema bench_search] [--keep]
 *   npx tsx bench/search.ts --extract      # no database: index rows per resource and µs per extraction
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import { openDatabase } from '../src/db/open.js';
import { migrate } from '../src/db/migrate.js';
import type { Database } from '../src/db/database.js';
import { initSearchDefinitions, patientCompartmentsOf, searchResources } from '../src/fhir/search/index.js';
import { extractIndexRows } from '../src/fhir/search/extract.js';
import type { IndexRows } from '../src/fhir/search/extract.js';
import { SPECS as INDEX_SPECS } from '../src/fhir/search/writer.js';
import { corpusOrFixturePath } from '../tools/shared-data.js';
import { syntheaResources } from '../tools/synthea.js';

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

const EXTRACT_ONLY = process.argv.includes('--extract');
const url = process.env.DATABASE_URL;
if (!url && !EXTRACT_ONLY) {
  console.error('DATABASE_URL must point at a PostgreSQL database');
  process.exit(2);
}

// deterministic pseudo-random numbers, so runs are comparable
let seed = 42;
const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];

const synthea = syntheaResources(corpusOrFixturePath('fhir/synthea'));
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

/** COPY text format: tab-separated, `\N` for NULL, backslash escapes. */
function copyField(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  const t = String(v);
  return /[\\\t\n\r]/.test(t) ? t.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : t;
}
const pgArray = (items: string[]): string => `{${items.map((i) => `"${i.replace(/["\\]/g, (c) => `\\${c}`)}"`).join(',')}}`;

/** One long-running COPY per table, each on its own connection, with backpressure. */
class CopySink {
  private readonly client: pg.Client;
  private stream?: Writable;
  private buf: string[] = [];
  private bufLen = 0;
  rows = 0;
  constructor(
    connectionString: string,
    readonly table: string,
    private readonly columns: string[],
  ) {
    this.client = new pg.Client({ connectionString });
  }
  async open(): Promise<void> {
    await this.client.connect();
    this.stream = this.client.query(copyFrom(`COPY ${this.table} (${this.columns.join(', ')}) FROM STDIN`));
  }
  async add(fields: unknown[]): Promise<void> {
    const line = fields.map(copyField).join('\t') + '\n';
    this.buf.push(line);
    this.bufLen += line.length;
    this.rows++;
    if (this.bufLen > 1 << 20) await this.flush();
  }
  async flush(): Promise<void> {
    if (!this.buf.length) return;
    const chunk = this.buf.join('');
    this.buf = [];
    this.bufLen = 0;
    if (!this.stream!.write(chunk)) await once(this.stream!, 'drain');
  }
  async close(): Promise<void> {
    await this.flush();
    const stream = this.stream!;
    await new Promise<void>((resolve, reject) => {
      stream.once('finish', resolve);
      stream.once('error', reject);
      stream.end();
    });
    await this.client.end();
  }
}

/**
 * Bulk load for the benchmark: the rows come from the same extraction as every write (extractIndexRows + the
 * writer's table specs), but go in through COPY into tables whose secondary indexes are built afterwards,
 * which is how a large initial import is done. The real write path is measured by bench/fhir-crud.ts.
 */
async function load(db: Database, connectionString: string): Promise<{ patients: Patient[]; obsPerSec: number }> {
  const idx = await db.query<{ indexname: string; indexdef: string }>(
    `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND (tablename = 'resource' OR tablename LIKE 'search\\_%')
       AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE connamespace = $1::regnamespace)`,
    [SCHEMA],
  );
  for (const i of idx.rows) await db.exec(`DROP INDEX ${i.indexname}`);
  const resourceSink = new CopySink(connectionString, 'resource', [
    'resource_type', 'id', 'version_id', 'last_updated', 'deleted', 'content', 'compartments', 'seq',
  ]);
  const sinks = INDEX_SPECS.map((spec) => new CopySink(connectionString, spec.table, ['resource_type', 'id', ...spec.columns.map((c) => c.name)]));
  await Promise.all([resourceSink, ...sinks].map((s) => s.open()));
  let seq = 0;
  const now = new Date().toISOString();
  const write = async (r: Resource): Promise<void> => {
    r.meta = { ...r.meta, versionId: '1', lastUpdated: now };
    await resourceSink.add([r.resourceType, r.id, 1, now, 'f', JSON.stringify(r), pgArray(patientCompartmentsOf(r)), ++seq]);
    const rows = extractIndexRows(r);
    for (let n = 0; n < INDEX_SPECS.length; n++) {
      for (const row of INDEX_SPECS[n].values(rows)) await sinks[n].add([r.resourceType, r.id, ...row]);
    }
  };
  const patients: Patient[] = [];
  for (let i = 0; i < N_PAT; i++) patients.push(makePatient(i));
  const t0 = performance.now();
  for (const p of patients) await write(p);
  let lastReport = t0;
  for (let i = 0; i < N_OBS; i++) {
    await write(makeObservation(patients[i % patients.length].id!));
    if ((i & 1023) === 0 && performance.now() - lastReport > 15_000) {
      lastReport = performance.now();
      console.log(`  copied ${i} observations, ${Math.round((i / (lastReport - t0)) * 1000)}/s`);
    }
  }
  await Promise.all([resourceSink, ...sinks].map((s) => s.close()));
  const tCopy = performance.now();
  const indexRows = sinks.reduce((n, s) => n + s.rows, 0);
  console.log(
    `copy: ${Math.round((tCopy - t0) / 1000)} s for ${N_PAT + N_OBS} resources and ${indexRows} index rows ` +
      `(${(indexRows / (N_PAT + N_OBS)).toFixed(1)} per resource: ${sinks.map((s) => `${s.table.replace('search_', '')} ${s.rows}`).join(', ')})`,
  );
  // secondary indexes, two builders at a time (one per core)
  const queue = [...idx.rows];
  await Promise.all(
    [0, 1].map(async () => {
      const c = new pg.Client({ connectionString });
      await c.connect();
      await c.query(`SET maintenance_work_mem = '512MB'`);
      for (let i = queue.shift(); i; i = queue.shift()) await c.query(i.indexdef);
      await c.end();
    }),
  );
  const tIdx = performance.now();
  console.log(`create ${idx.rows.length} indexes: ${Math.round((tIdx - tCopy) / 1000)} s`);
  return { patients, obsPerSec: (N_OBS / (tIdx - t0)) * 1000 };
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
    console.log(`loading ${N_PAT} patients and ${N_OBS} observations into schema ${SCHEMA} (COPY)…`);
    const loaded = await load(db, u.toString());
    patients = loaded.patients;
    console.log(`load: ${Math.round(loaded.obsPerSec)} observations/s overall (generate + extract + COPY + index build)`);
    const t = performance.now();
    await db.exec('VACUUM ANALYZE');
    console.log(`vacuum analyze: ${Math.round(performance.now() - t)} ms`);
  } else {
    const r = await db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'Patient' LIMIT 10000`);
    patients = r.rows.map((x) => JSON.parse(x.content) as Patient);
  }
  const sizes = await db.query<{ t: string; n: string; size: string }>(
    `SELECT relname AS t, n_live_tup::text AS n, pg_size_pretty(pg_total_relation_size(relid)) AS size
       FROM pg_stat_user_tables WHERE schemaname = $1 AND n_live_tup > 0 ORDER BY pg_total_relation_size(relid) DESC`,
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
  // noise floor: a bare round trip shows what the shared machine adds to every tail
  stats.push(await measure('SELECT 1 (round trip, noise floor)', async () => (await db.query('SELECT 1')).rows.length));
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
  /** Follows `next` links (keyset `_cursor` when the order allows it) for up to `maxPages` pages. */
  const walk = async (params: Array<[string, string]>, maxPages: number): Promise<number> => {
    let n = 0;
    let query = params;
    for (let page = 0; page < maxPages; page++) {
      const b = await searchResources(db, { resourceType: 'Observation', params: query, baseUrl: base, handling: 'strict' });
      n += b.entry?.length ?? 0;
      const next = b.link?.find((l) => l.relation === 'next');
      if (!next) break;
      query = [...new URL(next.url!).searchParams.entries()];
    }
    return n;
  };
  stats.push(
    await measure('Observation?patient&_sort=-date&_count=50 (all pages)', () =>
      walk([['patient', pick(patients).id!], ['_sort', '-date'], ['_count', '50']], 1000),
    ),
  );
  stats.push(await measure('Observation?_sort=-date&_count=50 (first 3 pages, all patients)', () => walk([['_sort', '-date'], ['_count', '50']], 3)));
  stats.push(
    await measure('Observation?_sort=-date&_count=50 (pages 1-20, all patients)', () => walk([['_sort', '-date'], ['_count', '50']], 20)),
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

const rowCount = (r: IndexRows): number => Object.values(r).reduce((n, a: unknown[]) => n + a.length, 0);

/** Micro-benchmark of extractIndexRows on the Synthea shapes: rows per resource and µs per extraction. */
function extractBench(): void {
  initSearchDefinitions();
  console.log('| type | resources | index rows / resource | CPU µs / extraction |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const type of ['Observation', 'Encounter', 'Patient']) {
    const all = synthea.filter((r) => r.resourceType === type);
    const sample = all.slice(0, 2000);
    let rows = 0;
    for (const r of sample) rows += rowCount(extractIndexRows(r));
    for (let i = 0; i < 3; i++) for (const r of sample) extractIndexRows(r); // warm up
    const reps = Math.max(1, Math.round(6000 / sample.length));
    const t = process.cpuUsage();
    for (let i = 0; i < reps; i++) for (const r of sample) extractIndexRows(r);
    const cpu = process.cpuUsage(t);
    const us = (cpu.user + cpu.system) / (reps * sample.length); // CPU time: the machine is shared
    console.log(`| ${type} | ${sample.length} | ${(rows / sample.length).toFixed(1)} | ${us.toFixed(0)} |`);
  }
}

if (EXTRACT_ONLY) extractBench();
else await main();
