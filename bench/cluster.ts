/**
 * Node failure under load: `npm run bench -- cluster [--seconds 20] [--nodes 3]` (root; haproxy, postgresql,
 * iproute2). Starts `npm run cluster -- up` (each node its own network namespace, HAProxy in front, one PostgreSQL,
 * blobs in the database), runs mixed load through HAProxy — FHIR conditional creates and reads, HL7 ORU^R01 from
 * senders that resend what was not ACKed (each result also delivered outbound to an MLLP peer), DICOM C-STOREs with
 * DCMTK's storescu (a failed association is sent again), a bulk export — kills one node with SIGKILL a third of the way in, and
 * prints: requests per kind, failures seen by clients and for how long, the time until every kind succeeded again,
 * and, counted in the database afterwards against what was answered: lost and duplicated.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { frame, MllpDecoder } from '../facades/hl7v2/mllp.js';
import { makeInstances } from '../tools/dicom-instances.js';
import { startPeer } from '../tools/mllp-peer.js';

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
const kinds: Record<string, Kind> = { create: { ok: 0, failed: 0 }, read: { ok: 0, failed: 0 }, hl7: { ok: 0, failed: 0 }, 'c-store': { ok: 0, failed: 0 } };
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

const storedInstances = new Set<string>();
/** storescu of one batch of files per association, until the batch is stored; resending a stored instance is harmless. */
async function storer(files: string[][]): Promise<void> {
  for (const batch of files) {
    if (stop) return;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) =>
        execFile('storescu', ['-aet', 'BENCH', '-aec', 'CONFLUX', '127.0.0.1', '11112', ...batch], { env: { ...process.env, TCP_NODELAY: '1' } }, (err) => resolve(!err)),
      );
      if (ok) break;
      failed('c-store');
      if (stop) return;
    }
    kinds['c-store'].ok += batch.length;
    for (const f of batch) storedInstances.add(path.basename(f, '.dcm'));
  }
}

const instances = makeInstances(mkdtempSync(path.join(os.tmpdir(), 'conflux-bench-cluster-')), 4000, '7', 50);
const batches: string[][] = [];
for (let i = 0; i < instances.length; i += 10) batches.push(instances.slice(i, i + 10));

/** The cluster node (1-based) whose process claimed the export job, from the job's worker id (host:pid:…). */
async function exportingNode(statusUrl: string | null): Promise<number | undefined> {
  const job = statusUrl?.split('/').at(-1);
  if (!job) return undefined;
  const nodes = (JSON.parse(readFileSync('/tmp/conflux-cluster/state.json', 'utf8')) as { nodes: Array<{ pid: number }> }).nodes;
  const db = new pg.Client({ connectionString: 'postgres://postgres@10.77.0.1:5499/postgres' });
  await db.connect();
  try {
    for (let i = 0; i < 100; i++) {
      const worker = (await db.query<{ worker: string | null }>('SELECT worker FROM export_job WHERE id = $1', [job])).rows[0]?.worker;
      const pid = worker ? Number(worker.split(':')[1]) : undefined;
      const n = nodes.findIndex((x) => x.pid === pid);
      if (n >= 0) return n + 1;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  } finally {
    await db.end();
  }
}

console.log(`starting a ${NODES}-node cluster…`);
cluster('up', '--nodes', String(NODES), '--open', '--env', 'DICOM_ACCEPT_ANY_AE=true', '--env', 'HL7_OUTBOUND_POLL_MS=50', '--env', 'EXPORT_FILE_MAX_RESOURCES=20', '--env', 'EXPORT_LEASE_MS=5000');
// The receiving system of outbound HL7 v2, reachable from every node on the bridge.
const peer = await startPeer(undefined, 0, '10.77.0.1');
try {
  const dest = await fetch(`${base}/admin/outbound/destinations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'peer', host: '10.77.0.1', port: peer.port, profile: 'generic', types: 'ORU' }),
  });
  if (!dest.ok) throw new Error(`adding the outbound destination: ${dest.status} ${await dest.text()}`);
  const t0 = performance.now();
  const load = [
    ...Array.from({ length: 6 }, (_, c) => creator(c)),
    reader(),
    reader(),
    ...Array.from({ length: 4 }, (_, c) => sender(c)),
    storer(batches.filter((_, i) => i % 2 === 0)),
    storer(batches.filter((_, i) => i % 2 === 1)),
  ];
  await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 3));
  // An export of everything so far (in small files: it runs a while), and the node that claims it is the one killed,
  // so that the export must finish on a survivor.
  const exportStatus = (await fetch(`${base}/fhir/$export`, { headers: { accept: 'application/fhir+json', prefer: 'respond-async' } })).headers.get('content-location');
  const exporter = await exportingNode(exportStatus);
  const killedAt = performance.now();
  const victim = exporter ?? 1;
  console.log(`${cluster('kill', String(victim)).trim()}${exporter ? ' (it was running the export)' : ' (the export was not claimed in time: node 1 instead)'}`);
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

  // Every ACKed ORU's result leaves once for the peer, from whichever node claims it (the outbox survives the kill).
  const outboundStart = performance.now();
  const fillers = () => new Map<string, number>(peer.received.map((r) => [r.msg.getSegment('OBR')?.getField(3)?.getComponent(1) ?? '', 0]));
  while (performance.now() - outboundStart < 120_000) {
    const got = fillers();
    if ([...ackedMessages].every((c) => got.has(`F${c}`))) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  // Per result: the MSH-10s it arrived under. The same MSH-10 twice is a resend the receiver recognises (a node died
  // between the peer's ACK and recording it); two different MSH-10s would be a duplicate.
  const delivered = new Map<string, Set<string>>();
  let resends = 0;
  for (const r of peer.received) {
    const f = r.msg.getSegment('OBR')?.getField(3)?.getComponent(1) ?? '';
    const ids = delivered.get(f) ?? new Set<string>();
    if (ids.has(r.controlId)) resends++;
    delivered.set(f, ids.add(r.controlId));
  }
  const missingOutbound = [...ackedMessages].filter((c) => !delivered.has(`F${c}`));
  const outboundLost = missingOutbound.length;
  if (outboundLost) console.log(`results not delivered: ${missingOutbound.slice(0, 5).join(', ')}${outboundLost > 5 ? ', …' : ''}`);
  const outboundDup = [...delivered.values()].filter((ids) => ids.size > 1).length;

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
  const sops = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM dicom_instance');
  const outbox = await db.query<{ state: string; n: number; stuck: string | null }>(
    `SELECT state, count(*)::int AS n, max(lease_until)::text AS stuck FROM hl7_outbox GROUP BY state ORDER BY state`,
  );
  const pendingTriggers = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM message_log WHERE status NOT IN ('processed', 'error')");
  await db.end();

  console.log(`\n${secs.toFixed(0)} s of load through HAProxy, node${victim} killed with SIGKILL at ${((killedAt - t0) / 1000).toFixed(1)} s`);
  for (const [k, v] of Object.entries(kinds)) {
    const outage = v.lastFailure !== undefined ? `${((v.lastFailure - killedAt) / 1000).toFixed(2)} s after the kill` : 'none';
    console.log(`${k.padEnd(7)} ${String(v.ok).padStart(6)} answered (${(v.ok / secs).toFixed(0)}/s), ${v.failed} failed attempts; last failure ${outage}`);
  }
  const recovered = Math.max(...Object.values(kinds).map((v) => (v.lastFailure ?? killedAt) - killedAt)) / 1000;
  console.log(`every request kind succeeded again ${recovered.toFixed(2)} s after the kill`);
  console.log(`Patients: ${answeredPatients.size} answered, ${lostPatients} lost, ${dupPatients} duplicated`);
  console.log(`ORU^R01: ${ackedMessages.size} ACKed, ${lostMessages} lost, ${dupMessages} logged twice; ${observations} Observations stored`);
  console.log(`C-STORE: ${storedInstances.size} instances stored (storescu exit 0), ${Math.max(0, storedInstances.size - sops.rows[0].n)} lost; ${sops.rows[0].n} instance rows (one per SOP Instance UID)`);
  console.log(
    `outbound ORU to the peer: ${delivered.size} results delivered for ${ackedMessages.size} ACKed, ${outboundLost} missing, ${outboundDup} duplicated ` +
      `(${resends} resent under the same MSH-10); drained ${((performance.now() - outboundStart) / 1000).toFixed(1)} s after the load stopped`,
  );
  console.log(`outbox rows by state: ${outbox.rows.map((r) => `${r.state} ${r.n}${r.stuck ? ` (lease until ${r.stuck})` : ''}`).join(', ')}; messages not finished in the log: ${pendingTriggers.rows[0].n}`);
  console.log(`export started just before the kill: ${exportState}`);
  console.log(cluster('status').trim());
} finally {
  await peer.close();
  if (!process.argv.includes('--keep')) cluster('down');
}
