/**
 * Search at device-data depth (issue 21), on PostgreSQL (DATABASE_URL). Patients with 100, 10,000, 100,000 and
 * 1,000,000 vital-sign readings (three codes in turn, one reading every 20 s up to the same instant) are loaded
 * side by side with COPY, beside a ward of shallow patients, and each hot query is timed per patient:
 *
 *   1. subject + code, newest first        Observation?subject=Patient/…&code=http://loinc.org|8867-4&_sort=-date&_count=10
 *   2. patient + category, newest first    Observation?patient=…&category=vital-signs&_sort=-date&_count=20
 *   3. subject + code + last hour          Observation?subject=Patient/…&code=…|9279-1&date=ge<now-1h>&_count=10
 *   4. the same + last 30 days             (a wide range: in id order most rows match)
 *   5. the next page of 1                  (the `_cursor` of its next link)
 *   6. $lastn max=3, category vital-signs  (when this version has it)
 *
 * Twice: with stale statistics (ANALYZE ran when every patient had ≤ 100 readings, then the deep ones were
 * loaded in one burst), and after VACUUM ANALYZE. Beside each figure: the same SQL statements Conflux ran,
 * timed over a bare `pg` client in the same run (the anchor), and a `SELECT 1` round trip.
 *
 *   npm run bench -- search-depth [--max 1000000] [--ward 50] [--iterations 200] [--budget 8] [--schema bench_depth] [--keep]
 *                                 [--explain]   (prints EXPLAIN ANALYZE of each statement for the deepest patient)
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Bundle, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { openDatabase } from '../src/db/open.js';
import { migrate } from '../src/db/migrate.js';
import type { Database, Queryable } from '../src/db/database.js';
import { initSearchDefinitions, patientCompartmentsOf, searchResources } from '../src/fhir/search/index.js';
import { extractIndexRows } from '../src/fhir/search/extract.js';
import { SPECS } from '../src/fhir/search/writer.js';
import { percentiles } from './lib.js';

const argv = process.argv.slice(2);
const num = (name: string, fallback: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(argv[i + 1]);
};
const str = (name: string, fallback: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? fallback : argv[i + 1];
};
const MAX = num('max', 1_000_000);
const WARD = num('ward', 50);
const ITER = num('iterations', 200);
const BUDGET_MS = num('budget', 8) * 1000;
const SCHEMA = str('schema', 'bench_depth');
const KEEP = argv.includes('--keep');
const EXPLAIN = argv.includes('--explain');
const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL must point at a PostgreSQL database');
  process.exit(2);
}
for (const [k, v] of [['max', MAX], ['ward', WARD], ['iterations', ITER], ['budget', BUDGET_MS]] as const) {
  if (!Number.isFinite(v) || v < 1) {
    console.error(`--${k} must be a positive number`);
    process.exit(2);
  }
}

const DEPTHS = [100, 10_000, 100_000, 1_000_000].filter((d) => d <= MAX);
const END = Date.UTC(2026, 10, 30, 12, 0, 0);
const STEP_MS = 20_000;
const LOINC = 'http://loinc.org';
const CODES = [
  ['8867-4', 'Heart rate', '/min', 72],
  ['9279-1', 'Respiratory rate', '/min', 16],
  ['59408-5', 'Oxygen saturation in Arterial blood by Pulse oximetry', '%', 97],
] as const;

function observation(id: string, patient: string, k: number): Observation {
  const [code, display, unit, base] = CODES[k % CODES.length];
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
    code: { coding: [{ system: LOINC, code, display }] },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: new Date(END - k * STEP_MS).toISOString(),
    valueQuantity: { value: base + (k % 7) - 3, unit, system: 'http://unitsofmeasure.org', code: unit },
  };
}

const copyField = (v: unknown): string => {
  if (v === null || v === undefined) return '\\N';
  const t = String(v);
  return /[\\\t\n\r]/.test(t) ? t.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : t;
};

/** COPY FROM STDIN on its own connection, fed in 1 MB chunks with backpressure. */
async function copySink(connectionString: string, table: string, columns: string[]) {
  const client = new pg.Client({ connectionString });
  await client.connect();
  const stream: Writable = client.query(copyFrom(`COPY ${table} (${columns.join(', ')}) FROM STDIN`));
  let buf: string[] = [];
  let len = 0;
  const flush = async (): Promise<void> => {
    if (!buf.length) return;
    const chunk = buf.join('');
    buf = [];
    len = 0;
    if (!stream.write(chunk)) await once(stream, 'drain');
  };
  return {
    rows: 0,
    async add(fields: unknown[]): Promise<void> {
      const line = fields.map(copyField).join('\t') + '\n';
      buf.push(line);
      len += line.length;
      this.rows++;
      if (len > 1 << 20) await flush();
    },
    async close(): Promise<void> {
      await flush();
      await new Promise<void>((resolve, reject) => {
        stream.once('finish', resolve);
        stream.once('error', reject);
        stream.end();
      });
      await client.end();
    },
  };
}

/** Loads resources (and their index rows, from the same extraction every write uses) with COPY. */
async function copyResources(connectionString: string, resources: Iterable<Resource>): Promise<number> {
  const sinks = await Promise.all([
    copySink(connectionString, 'resource', ['resource_type', 'id', 'version_id', 'last_updated', 'deleted', 'content', 'compartments', 'seq']),
    ...SPECS.map((s) => copySink(connectionString, s.table, ['resource_type', 'id', ...s.columns.map((c) => c.name)])),
  ]);
  const [res, ...idx] = sinks;
  const now = new Date().toISOString();
  let n = 0;
  for (const r of resources) {
    r.meta = { versionId: '1', lastUpdated: now };
    const compartments = `{${patientCompartmentsOf(r).map((c) => `"${c}"`).join(',')}}`;
    await res.add([r.resourceType, r.id, 1, now, 'f', JSON.stringify(r), compartments, ++seq]);
    const rows = extractIndexRows(r);
    for (let i = 0; i < SPECS.length; i++) for (const row of SPECS[i].values(rows)) await idx[i].add([r.resourceType, r.id, ...row]);
    n++;
  }
  await Promise.all(sinks.map((s) => s.close()));
  return n;
}
let seq = 0;

/** Readings of `patients` (id → depth) in time order, interleaved as monitors filing at once would write them. */
function* readings(patients: Array<[string, number]>): Generator<Resource> {
  const deepest = Math.max(...patients.map(([, d]) => d));
  for (let k = deepest - 1; k >= 0; k--) {
    for (const [id, depth] of patients) if (k < depth) yield observation(`${id}-${k}`, id, k);
  }
}

interface Captured {
  sql: string;
  params: unknown[];
}

/** Records the statements a search sends, so the anchor can replay them over a bare client. */
function recording(db: Queryable, out: Captured[]): Queryable {
  return {
    exec: (s) => db.exec(s),
    query: (sql, params) => {
      out.push({ sql, params: params ?? [] });
      return db.query(sql, params);
    },
  };
}

async function time(run: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 5; i++) await run();
  const lat: number[] = [];
  const start = performance.now();
  while (lat.length < ITER && (lat.length < 10 || performance.now() - start < BUDGET_MS)) {
    const t = performance.now();
    await run();
    lat.push(performance.now() - t);
  }
  return lat;
}

const MAX_DEPTH = Math.max(...DEPTHS);

async function explain(client: pg.Client, title: string, statements: Captured[]): Promise<string> {
  const out = [`\n#### ${title}`];
  for (const s of statements) {
    const r = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON) ${s.sql}`, s.params);
    out.push('```', s.sql.replace(/\s+/g, ' ').slice(0, 600), '', ...r.rows.map((x) => x['QUERY PLAN']), '```');
  }
  return out.join('\n');
}

type Query = { name: string; run: (db: Queryable) => Promise<Bundle> };

async function main(): Promise<void> {
  initSearchDefinitions();
  const lastn = await import('../src/fhir/search/lastn.js').catch(() => undefined);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.query(`CREATE SCHEMA ${SCHEMA}`);
  const scoped = new URL(url!);
  scoped.searchParams.set('options', `-c search_path=${SCHEMA}`);
  const cs = scoped.toString();
  const db: Database = await openDatabase({ databaseUrl: cs, dataDir: null });
  await migrate(db);
  const tables = ['resource', ...SPECS.map((s) => s.table)];
  // no automatic ANALYZE while loading and measuring the stale phase: the statistics stay those of the ward
  for (const t of tables) await db.exec(`ALTER TABLE ${t} SET (autovacuum_enabled = false)`);

  const ward: Array<[string, number]> = Array.from({ length: WARD }, (_, i) => [`ward-${i}`, 100]);
  const subjects: Array<[string, number]> = DEPTHS.map((d) => [`depth-${d}`, d]);
  const patients: Patient[] = [...ward, ...subjects].map(([id]) => ({ resourceType: 'Patient', id, name: [{ family: id }] }));
  let t0 = performance.now();
  await copyResources(cs, [...patients, ...readings([...ward, ...subjects.filter(([, d]) => d <= 100)])]);
  await db.exec('ANALYZE');
  console.log(`ward: ${WARD} patients × 100 readings and the 100-reading patient, analysed (${Math.round(performance.now() - t0)} ms)`);

  // the deep patients in one burst, secondary indexes dropped and rebuilt as a bulk import does
  const idx = await db.query<{ indexname: string; indexdef: string }>(
    `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2::text[])
       AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE connamespace = $1::regnamespace)`,
    [SCHEMA, tables],
  );
  for (const i of idx.rows) await db.exec(`DROP INDEX ${i.indexname}`);
  t0 = performance.now();
  const n = await copyResources(cs, readings(subjects.filter(([, d]) => d > 100)));
  const tCopy = performance.now();
  const queue = [...idx.rows];
  await Promise.all(
    [0, 1].map(async () => {
      const c = new pg.Client({ connectionString: cs });
      await c.connect();
      await c.query(`SET maintenance_work_mem = '512MB'`);
      for (let i = queue.shift(); i; i = queue.shift()) await c.query(i.indexdef);
      await c.end();
    }),
  );
  console.log(
    `burst: ${n} readings by COPY in ${Math.round((tCopy - t0) / 1000)} s (${Math.round((n / (tCopy - t0)) * 1000)}/s), ` +
      `${idx.rows.length} indexes rebuilt in ${Math.round((performance.now() - tCopy) / 1000)} s`,
  );

  const bare = new pg.Client({ connectionString: cs });
  await bare.connect();
  const base = 'http://bench/fhir';
  const hour = new Date(END - 3600_000).toISOString();
  const month = new Date(END - 30 * 86400_000).toISOString();
  const search = (params: Array<[string, string]>) => (q: Queryable) =>
    searchResources(q, { resourceType: 'Observation', params, baseUrl: base, handling: 'strict' });
  const queriesOf = async (p: string): Promise<Query[]> => {
    const q1: Array<[string, string]> = [['subject', `Patient/${p}`], ['code', `${LOINC}|8867-4`], ['_sort', '-date'], ['_count', '10']];
    const first = await search(q1)(db);
    const next = first.link?.find((l) => l.relation === 'next')?.url;
    const qs: Query[] = [
      { name: '1 subject+code, -date', run: search(q1) },
      { name: '2 patient+category, -date', run: search([['patient', p], ['category', 'vital-signs'], ['_sort', '-date'], ['_count', '20']]) },
      { name: '3 subject+code, last hour', run: search([['subject', `Patient/${p}`], ['code', `${LOINC}|9279-1`], ['date', `ge${hour}`], ['_count', '10']]) },
      { name: '4 subject+code, last 30 days', run: search([['subject', `Patient/${p}`], ['code', `${LOINC}|9279-1`], ['date', `ge${month}`], ['_count', '10']]) },
    ];
    if (next) qs.push({ name: '5 next page of 1', run: search([...new URL(next).searchParams.entries()]) });
    if (lastn) {
      const params: Array<[string, string]> = [['patient', p], ['category', 'vital-signs'], ['max', '3']];
      qs.push({ name: '6 $lastn max=3', run: (q) => lastn.runLastn(q, { params, baseUrl: base }) });
    }
    return qs;
  };
  const measured = [...subjects, ['ward-0', 100] as [string, number]];
  const plans: string[] = [];
  const report = async (phase: string): Promise<void> => {
    const floor = percentiles(await time(() => bare.query('SELECT 1')), [50, 99]);
    console.log(`\n${phase}: p50 / p99 in ms (SELECT 1 round trip: ${floor.p50} / ${floor.p99})`);
    console.log('| patient | query | Conflux p50 | Conflux p99 | same SQL, bare pg p50 | entries |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: |');
    for (const [p, depth] of measured) {
      const label = p.startsWith('ward') ? `ward (100), beside the deep ones` : `${depth.toLocaleString('en')} readings`;
      for (const q of await queriesOf(p)) {
        const captured: Captured[] = [];
        const b = await q.run(recording(db, captured));
        const c = percentiles(await time(() => q.run(db)), [50, 99]);
        const a = percentiles(await time(async () => { for (const s of captured) await bare.query(s.sql, s.params); }), [50]);
        console.log(`| ${label} | ${q.name} | ${c.p50} | ${c.p99} | ${a.p50} | ${b.entry?.length ?? 0} |`);
        if (EXPLAIN && depth === MAX_DEPTH && !p.startsWith('ward')) plans.push(await explain(bare, `${phase}, ${label}, ${q.name}`, captured));
      }
    }
  };
  await report('stale statistics (analysed before the burst)');
  for (const t of tables) await db.exec(`ALTER TABLE ${t} RESET (autovacuum_enabled)`);
  t0 = performance.now();
  await db.exec('VACUUM ANALYZE');
  console.log(`\nvacuum analyze: ${Math.round((performance.now() - t0) / 1000)} s`);
  await report('after VACUUM ANALYZE');
  for (const p of plans) console.log(p);
  await bare.end();
  await db.close();
  if (!KEEP) await admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
  await admin.end();
}

await main();
