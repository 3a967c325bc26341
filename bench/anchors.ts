/**
 * Anchors measured in the same run as Conflux, so a figure reads as a ratio on a shared, noisy machine:
 *  - pgbench running the SQL a FHIR create runs (history row, current row, six index rows, one transaction) on the
 *    real schema, with the same number of clients;
 *  - a bare `node:http` server in its own process answering a stored Observation, driven by the same client code.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../src/db/open.js';
import { migrate } from '../src/db/migrate.js';
import { request, runConcurrent, scratchSchema } from './lib.js';

const OBSERVATION = JSON.stringify({
  resourceType: 'Observation',
  id: 'x',
  meta: { versionId: '1', lastUpdated: '2026-12-02T10:00:00.000Z' },
  status: 'final',
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  subject: { reference: 'Patient/p1' },
  effectiveDateTime: '2024-01-01T00:00:00.000Z',
  valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
});

/** pgbench transactions/s of what one Observation create writes, or undefined when pgbench is not installed. */
export async function pgbenchCreate(databaseUrl: string, clients: number, seconds = 10): Promise<number | undefined> {
  if (spawnSync('pgbench', ['--version']).status !== 0) return undefined;
  const scratch = await scratchSchema(databaseUrl, 'bench_anchor');
  try {
    const db = await openDatabase({ databaseUrl: scratch.url, dataDir: null });
    await migrate(db);
    await db.close();
    const json = OBSERVATION.replace(/'/g, "''");
    const id = `:client_id || '-' || :n`;
    const script = [
      '\\set n random(1, 9000000000000)',
      'BEGIN;',
      `INSERT INTO resource_history (resource_type, id, version_id, last_updated, method, content) VALUES ('Observation', ${id}, 1, now(), 'POST', '${json}');`,
      `INSERT INTO resource (resource_type, id, version_id, last_updated, content, compartments, seq) VALUES ('Observation', ${id}, 1, now(), '${json}', ARRAY['Patient/p1'], lastval());`,
      `INSERT INTO search_token (resource_type, id, code, system, value) VALUES ('Observation', ${id}, 'code', 'http://loinc.org', '8867-4'), ('Observation', ${id}, 'category', 'http://terminology.hl7.org/CodeSystem/observation-category', 'vital-signs'), ('Observation', ${id}, 'status', NULL, 'final');`,
      `INSERT INTO search_date (resource_type, id, code, low, high) VALUES ('Observation', ${id}, 'date', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z');`,
      `INSERT INTO search_quantity (resource_type, id, code, low, high, system, unit) VALUES ('Observation', ${id}, 'value-quantity', 72, 72, 'http://unitsofmeasure.org', '/min');`,
      `INSERT INTO search_reference (resource_type, id, code, target_type, target_id) VALUES ('Observation', ${id}, 'subject', 'Patient', 'p1');`,
      'END;',
    ].join('\n');
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'conflux-pgbench-')), 'create.sql');
    writeFileSync(file, script);
    // libpq reads the schema from PGOPTIONS (a URL's options= would need %20, not the + URLSearchParams writes).
    const r = spawnSync('pgbench', ['-n', '-M', 'prepared', '-c', String(clients), '-j', '2', '-T', String(seconds), '-f', file, databaseUrl], {
      encoding: 'utf8',
      env: { ...process.env, PGOPTIONS: `-c search_path=${scratch.schema},public` },
    });
    const tps = /tps = ([\d.]+)/.exec(r.stdout ?? '')?.[1];
    if (!tps) throw new Error(`pgbench failed: ${r.stderr || r.stdout}`);
    return Math.round(Number(tps));
  } finally {
    await scratch.drop();
  }
}

/** Reads/s of a bare node:http server (its own process) answering a stored Observation to `clients` concurrent clients. */
export async function bareHttpReads(total: number, clients: number): Promise<number> {
  const code = `
    const body = Buffer.from(${JSON.stringify(OBSERVATION)});
    require('node:http').createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': body.length, etag: 'W/"1"' });
      res.end(body);
    }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim())));
      child.once('exit', (c) => reject(new Error(`the bare server exited (${c})`)));
    });
    const url = `http://127.0.0.1:${port}/fhir/Observation/x`;
    const r = await runConcurrent(total, clients, async () => {
      const res = await request('GET', url);
      if (res.status !== 200) throw new Error(`bare server: ${res.status}`);
    });
    return Math.round((total * 1000) / r.ms);
  } finally {
    child.kill();
  }
}
