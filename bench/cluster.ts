/**
 * Node failure under load: `npm run bench -- cluster [--seconds 20] [--nodes 3]` (root; haproxy, postgresql,
 * iproute2). Starts `npm run cluster -- up` (each node its own network namespace, HAProxy in front, one PostgreSQL,
 * blobs in the database), runs mixed load through HAProxy — FHIR conditional creates and reads, HL7 ORU^R01 from
 * senders that resend what was not ACKed, a bulk export — kills one node with SIGKILL a third of the way in, and
 * prints: requests per kind, failures seen by clients and for how long, the time until every kind succeeded again,
 * and, counted in the database afterwards against what was answered: lost and duplicated.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import pg from 'pg';
import { frame, MllpDecoder } from '../facades/hl7v2/mllp.js';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const SECONDS = arg('seconds', 20);
const NODES = arg('nodes', 3);
const cluster = (...args: string[]) => execFileSync('npm', ['run', '-s', 'cluster', '--', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

interface Kind {
  ok: number;
  failed: number;
  lastFailure?: number;
  firstFailure?: number;
}
const kinds: Record<string, Kind> = { create: { ok: 0, failed: 0 }, read: { ok: 0, failed: 0 }, hl7: { ok: 0, failed: 0 } };
const failed = (k: string) => {
  const now = performance.now();
  kinds[k].failed++;
  kinds[k].firstFailure ??= now;
  kinds[k].lastFailure = now;
};

const base = 'http://127.0.0.1:8080';
const run = Date.now().toString(36);
const answeredPatients = new Set<string>();
const ackedMessages = new Set<string>();
let stop = false;

async function creator(c: number): Promise<void> {
  for (let i = 0; !stop; i++) {
    const mrn = `${run}-${c}-${i}`;
    // Conditional create: a retry of a create whose answer was lost cannot make a second Patient.
    for (;;) {
      const r = await fetch(`${base}/fhir/Patient`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json', 'if-none-exist': `identifier=urn:bench|${mrn}` },
        body: JSON.stringify({ resourceType: 'Patient', identifier: [{ system: 'urn:bench', value: mrn }] }),
      }).catch(() => undefined);
      if (r && (r.status === 201 || r.status === 200)) {
        await r.arrayBuffer();
        kinds.create.ok++;
        answeredPatients.add(mrn);
        break;
      }
      failed('create');
      if (stop) return;
    }
  }
}

async function reader(): Promise<void> {
  while (!stop) {
    const r = await fetch(`${base}/fhir/Patient?identifier=urn:bench|&_count=5`).catch(() => undefined);
    if (r?.status === 200) {
      await r.arrayBuffer();
      kinds.read.ok++;
    } else failed('read');
  }
}

function oru(ctl: string): string {
  return [
    `MSH|^~\\&|BENCH|LAB|CONFLUX|HOSP|20260101120000||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
    `PID|1||M${ctl}^^^HOSP^MR||Bench^Pat||19800101|F`,
    `OBR|1||F${ctl}^LAB|24331-1^Panel^LN|||20260101110000`,
    'OBX|1|NM|2345-7^Glucose^LN||90|mg/dL^mg/dL^UCUM|70-99|N|||F',
  ].join('\r');
}

/** One message on a connection until AA; on any failure, a new connection and the same message again. */
function sendOnce(ctl: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(2575, '127.0.0.1');
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    const dec = new MllpDecoder({ frame: (p) => done(p.toString().includes('MSA|AA|')) });
    s.setTimeout(10_000, () => done(false));
    s.on('data', (d) => dec.push(d));
    s.on('error', () => done(false));
    s.on('close', () => done(false));
    s.on('connect', () => s.write(frame(Buffer.from(oru(ctl)))));
  });
}

async function sender(c: number): Promise<void> {
  for (let i = 0; !stop; i++) {
    const ctl = `${run}-S${c}-${i}`;
    while (!(await sendOnce(ctl))) {
      failed('hl7');
      if (stop) return;
    }
    kinds.hl7.ok++;
    ackedMessages.add(ctl);
  }
}

console.log(`starting a ${NODES}-node cluster…`);
cluster('up', '--nodes', String(NODES), '--open');
try {
  const exportStatus = (
    await fetch(`${base}/fhir/$export?_type=Patient`, { headers: { accept: 'application/fhir+json', prefer: 'respond-async' } })
  ).headers.get('content-location');
  const t0 = performance.now();
  const load = [...Array.from({ length: 6 }, (_, c) => creator(c)), reader(), reader(), ...Array.from({ length: 4 }, (_, c) => sender(c))];
  await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 3));
  const killedAt = performance.now();
  console.log(cluster('kill', '1').trim());
  await new Promise((r) => setTimeout(r, (SECONDS * 2000) / 3));
  stop = true;
  await Promise.all(load);
  const secs = (performance.now() - t0) / 1000;

  let exportState = 'not started';
  if (exportStatus) {
    for (let i = 0; i < 600; i++) {
      const r = await fetch(exportStatus);
      await r.arrayBuffer();
      if (r.status === 200) {
        exportState = 'complete';
        break;
      }
      if (r.status !== 202) {
        exportState = `failed (${r.status})`;
        break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  const db = new pg.Client({ connectionString: 'postgres://postgres@10.77.0.1:5499/postgres' });
  await db.connect();
  const patients = await db.query<{ v: string; n: number }>(
    `SELECT i->>'value' AS v, count(*)::int AS n FROM resource, jsonb_array_elements(content::jsonb->'identifier') i
      WHERE resource_type = 'Patient' AND NOT deleted AND i->>'system' = 'urn:bench' GROUP BY 1`,
  );
  const stored = new Map(patients.rows.map((r) => [r.v, r.n]));
  const lostPatients = [...answeredPatients].filter((m) => !stored.has(m)).length;
  const dupPatients = patients.rows.filter((r) => r.n > 1).length;
  const obs = await db.query<{ ctl: string; n: number }>(
    `SELECT substring(content::jsonb #>> '{subject,reference}' from 9) AS ctl, count(*)::int AS n FROM resource
      WHERE resource_type = 'Observation' AND NOT deleted GROUP BY 1`,
  );
  const logged = await db.query<{ control_id: string; n: number }>(`SELECT control_id, count(*)::int AS n FROM message_log WHERE control_id LIKE $1 GROUP BY 1`, [`${run}-S%`]);
  const logByCtl = new Map(logged.rows.map((r) => [r.control_id, r.n]));
  const lostMessages = [...ackedMessages].filter((c) => !logByCtl.has(c)).length;
  const dupMessages = logged.rows.filter((r) => r.n > 1).length;
  const observations = obs.rows.reduce((a, r) => a + r.n, 0);
  await db.end();

  console.log(`\n${secs.toFixed(0)} s of load through HAProxy, node1 killed with SIGKILL at ${((killedAt - t0) / 1000).toFixed(1)} s`);
  for (const [k, v] of Object.entries(kinds)) {
    const outage = v.lastFailure !== undefined ? `${((v.lastFailure - killedAt) / 1000).toFixed(2)} s after the kill` : 'none';
    console.log(`${k.padEnd(7)} ${String(v.ok).padStart(6)} answered (${(v.ok / secs).toFixed(0)}/s), ${v.failed} failed attempts; last failure ${outage}`);
  }
  const recovered = Math.max(...Object.values(kinds).map((v) => (v.lastFailure ?? killedAt) - killedAt)) / 1000;
  console.log(`every request kind succeeded again ${recovered.toFixed(2)} s after the kill`);
  console.log(`Patients: ${answeredPatients.size} answered, ${lostPatients} lost, ${dupPatients} duplicated`);
  console.log(`ORU^R01: ${ackedMessages.size} ACKed, ${lostMessages} lost, ${dupMessages} logged twice; ${observations} Observations stored`);
  console.log(`export started before the kill: ${exportState}`);
  console.log(cluster('status').trim());
} finally {
  cluster('down');
}
