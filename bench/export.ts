/**
 * Bulk $export throughput: `npm run bench -- export [--size 1000000] [--file-size 100000] [--idle-seconds 3] [--keep] [--pglite]`.
 * Needs PostgreSQL in DATABASE_URL (or TEST_DATABASE_URL), or `--pglite` for the embedded database in a temporary
 * DATA_DIR. Loads `size` generated resources (into a private schema on PostgreSQL) with one INSERT ... SELECT
 * (bench only: the FHIR write path is measured elsewhere), starts
 * `conflux serve` as its own process, runs a system-level export and prints resources/s from kick-off to
 * manifest and the server's peak RSS (VmHWM). Then downloads every file and checks the total count.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchSchema, serverCommand } from './lib.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : fallback;
}

const size = Number(flag('size', '1000000'));
const fileSize = flag('file-size', '100000')!;
const keep = process.argv.includes('--keep');
const idleSeconds = Number(flag('idle-seconds', '3'));
const usePglite = process.argv.includes('--pglite');
const baseUrl = usePglite ? 'postgres://unused' : (process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL);
if (!baseUrl) {
  console.error('bench export needs PostgreSQL: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test), or pass --pglite');
  process.exit(2);
}
if (!Number.isInteger(size) || size < 1) {
  console.error(`--size must be a positive integer, got ${flag('size')}`);
  process.exit(2);
}

// PostgreSQL: a private schema for this run (created here, dropped at the end unless --keep).
const scratch = usePglite ? undefined : await scratchSchema(baseUrl, 'bench_export');

async function load(dataDir: string): Promise<void> {
  // The server's own migrations create the tables; run them through the real migrate().
  const { openDatabase } = await import('../src/db/open.js');
  const { migrate } = await import('../src/db/migrate.js');
  const d = await openDatabase(scratch ? { databaseUrl: scratch.url, dataDir: null } : { dataDir });
  await migrate(d);
  const t = performance.now();
  const patients = Math.max(1, Math.floor(size / 20));
  // 1 in 20 is a Patient; the rest Observations (60%), Conditions, Encounters, each in its patient's compartment.
  await d.query(
    `INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, compartments, seq)
     SELECT rt, id, 1, ts, false, content, ARRAY['Patient/p' || pid], i
     FROM (
       SELECT i, (i / 20) AS pid, now() - make_interval(secs => ($1::int - i)) AS ts,
              CASE WHEN i % 20 = 0 THEN 'Patient' WHEN i % 20 < 13 THEN 'Observation' WHEN i % 20 < 16 THEN 'Condition' ELSE 'Encounter' END AS rt,
              CASE WHEN i % 20 = 0 THEN 'p' || (i / 20) ELSE 'r' || i END AS id
       FROM generate_series(0, $1::int - 1) AS i
     ) g,
     LATERAL (SELECT CASE rt
       WHEN 'Patient' THEN json_build_object('resourceType', 'Patient', 'id', id, 'meta', json_build_object('versionId', '1', 'lastUpdated', ts),
         'identifier', json_build_array(json_build_object('system', 'urn:oid:2.16.840.1.113883.4.1', 'value', lpad(pid::text, 9, '0'))),
         'name', json_build_array(json_build_object('family', 'Family' || pid, 'given', json_build_array('Given' || pid))),
         'gender', CASE WHEN pid % 2 = 0 THEN 'female' ELSE 'male' END, 'birthDate', (date '1950-01-01' + (pid % 20000))::text,
         'address', json_build_array(json_build_object('line', json_build_array(pid || ' Main St'), 'city', 'Boston', 'state', 'MA', 'postalCode', '02110')))::text
       WHEN 'Observation' THEN json_build_object('resourceType', 'Observation', 'id', id, 'meta', json_build_object('versionId', '1', 'lastUpdated', ts),
         'status', 'final', 'category', json_build_array(json_build_object('coding', json_build_array(json_build_object('system', 'http://terminology.hl7.org/CodeSystem/observation-category', 'code', 'vital-signs')))),
         'code', json_build_object('coding', json_build_array(json_build_object('system', 'http://loinc.org', 'code', '8867-4', 'display', 'Heart rate'))),
         'subject', json_build_object('reference', 'Patient/p' || pid), 'effectiveDateTime', ts,
         'valueQuantity', json_build_object('value', 60 + i % 40, 'unit', '/min', 'system', 'http://unitsofmeasure.org', 'code', '/min'))::text
       WHEN 'Condition' THEN json_build_object('resourceType', 'Condition', 'id', id, 'meta', json_build_object('versionId', '1', 'lastUpdated', ts),
         'clinicalStatus', json_build_object('coding', json_build_array(json_build_object('system', 'http://terminology.hl7.org/CodeSystem/condition-clinical', 'code', 'active'))),
         'code', json_build_object('coding', json_build_array(json_build_object('system', 'http://snomed.info/sct', 'code', '44054006', 'display', 'Diabetes mellitus type 2'))),
         'subject', json_build_object('reference', 'Patient/p' || pid), 'onsetDateTime', ts)::text
       ELSE json_build_object('resourceType', 'Encounter', 'id', id, 'meta', json_build_object('versionId', '1', 'lastUpdated', ts),
         'status', 'finished', 'class', json_build_object('system', 'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'code', 'AMB'),
         'subject', json_build_object('reference', 'Patient/p' || pid), 'period', json_build_object('start', ts, 'end', ts))::text
     END AS content) c`,
    [size],
  );
  // Versions written so far all lie before the export's cut.
  await d.query(`SELECT setval('resource_history_seq_seq', $1::bigint)`, [size]);
  await d.query('ANALYZE resource');
  const bytes = (await d.query<{ b: number }>(`SELECT sum(length(content))::bigint AS b FROM resource`)).rows[0].b;
  await d.close();
  console.log(`loaded ${size.toLocaleString()} resources (${patients.toLocaleString()} patients, ${(Number(bytes) / 1e6).toFixed(0)} MB of JSON) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** Counts ndjson lines of a download without keeping it. */
function countLines(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => {
          for (let i = c.indexOf(10); i >= 0; i = c.indexOf(10, i + 1)) n++;
        });
        res.on('end', () => resolve(n));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-bench-export-'));
  await load(dataDir);
  const { BASE_URL: _ignored, ...inherited } = process.env;
  // One node process, the compiled server as `npm start` runs it, one worker: /proc/<pid> is the server itself.
  const child = spawn(process.execPath, serverCommand(), {
    cwd: ROOT,
    env: {
      ...inherited,
      DATABASE_URL: scratch?.url ?? '',
      DATA_DIR: dataDir,
      AUTH: 'off',
      PORT: '0',
      MLLP_PORT: '0',
      DICOM_PORT: '0',
      EXPORT_FILE_MAX_RESOURCES: fileSize,
      EXPORT_POLL_MS: '100',
      WORKERS: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => {
      log += b.toString();
      const m = /listening on :(\d+)/.exec(log);
      if (m) resolve(`http://127.0.0.1:${m[1]}`);
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  });
  try {
    // Let start-up work (plug-ins, first GCs) settle so the peak below is the export's, not the boot's.
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const rssBefore = peakRssMb(child.pid!);
    const rssIdle = rssMb(child.pid!);
    const t0 = performance.now();
    const k = await get(`${base}/fhir/$export`, { accept: 'application/fhir+json', prefer: 'respond-async' });
    if (k.status !== 202) throw new Error(`kick-off: HTTP ${k.status} ${k.body.toString()}`);
    const status = String(k.headers['content-location']);
    let manifest: { output: Array<{ type: string; url: string; count: number }> };
    for (;;) {
      const s = await get(status);
      if (s.status === 200) {
        manifest = JSON.parse(s.body.toString());
        break;
      }
      if (s.status !== 202) throw new Error(`status: HTTP ${s.status} ${s.body.toString()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const seconds = (performance.now() - t0) / 1000;
    const exported = manifest.output.reduce((n, o) => n + o.count, 0);
    const rssPeak = peakRssMb(child.pid!);
    let downloaded = 0;
    for (const o of manifest.output) downloaded += await countLines(o.url);
    const figures = {
      resources: exported,
      files: manifest.output.length,
      seconds: Number(seconds.toFixed(2)),
      resourcesPerSecond: Math.round(exported / seconds),
      serverPeakRssMb: Math.round(rssPeak),
      serverPeakRssBeforeKickoffMb: Math.round(rssBefore),
      serverRssAtKickoffMb: Math.round(rssIdle),
      downloadedLines: downloaded,
      database: usePglite ? 'pglite' : 'postgres',
      cpus: os.cpus().length,
    };
    console.log(JSON.stringify(figures, null, 2));
    if (exported !== size || downloaded !== size) throw new Error(`expected ${size} resources, manifest says ${exported}, downloads have ${downloaded}`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    if (!keep) rmSync(dataDir, { recursive: true, force: true });
    if (!keep) await scratch?.drop();
    else console.log(scratch ? `kept schema ${scratch.schema}` : `kept ${dataDir}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
