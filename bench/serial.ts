/**
 * ASTM results/s through a socat pty pair at 115200 baud (parse + map + file through the repository into
 * in-memory PGlite), and the time from the analyzer's last frame to the committed Observations
 * (the ACK of the last frame is sent only after the commit).
 * Run: npx tsx bench/serial.ts [sessions=40]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SerialPort } from 'serialport';
import type { Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/open.js';
import { createRuntime } from '../src/runtime.js';
import { addDevice, associate, deviceStore } from '../src/devices/index.js';
import { encodeMessage } from '../facades/serial/astm/frame.js';
import { sendSession, streamLine } from '../facades/serial/astm/sender.js';
import { parseSerialConfig } from '../facades/serial/config.js';
import { startPort } from '../facades/serial/index.js';

const sessions = Number(process.argv[2] ?? 40);
const RESULTS = 20;
const dir = mkdtempSync(path.join(tmpdir(), 'conflux-bench-serial-'));
const host = path.join(dir, 'host');
const dev = path.join(dir, 'dev');
const socat = spawn('socat', [`pty,raw,echo=0,link=${host}`, `pty,raw,echo=0,link=${dev}`], { stdio: 'ignore' });
while (!existsSync(host) || !existsSync(dev)) await new Promise((r) => setTimeout(r, 20));

const db = await openDatabase({ dataDir: null });
const rt = await createRuntime(await loadConfig({ AUTH: 'off' }), { db });
const store = deviceStore({ db, repo: rt.repo, write: rt.write });
const patient = await store.create<Patient>({ resourceType: 'Patient', name: [{ family: 'Bench' }] });
const d = await addDevice(store, { name: 'bench analyzer', port: host }, { who: 'bench' });
await associate(store, { device: d.reference, patient: `Patient/${patient.id}`, start: '2000-01-01T00:00:00Z' }, { who: 'bench' });
const [cfg] = parseSerialConfig({ ports: [{ name: 'bench', path: host, baudRate: 115200, timeZone: 'UTC' }] });
let processed = 0;
const running = startPort(cfg, { store, log: { info() {}, warn() {}, error: console.error }, onProcessed: () => void processed++ });
while (!running.port.isOpen) await new Promise((r) => setTimeout(r, 20));
const analyzer = new SerialPort({ path: dev, baudRate: 115200 });
await new Promise((r) => analyzer.once('open', r));
const line = streamLine(analyzer);

function message(n: number): Buffer[] {
  const ts = `2024${String(1 + (n % 12)).padStart(2, '0')}${String(1 + (n % 28)).padStart(2, '0')}${String(n % 24).padStart(2, '0')}${String(n % 60).padStart(2, '0')}00`;
  const codes = ['WBC', 'RBC', 'HGB', 'HCT', 'MCV', 'MCH', 'MCHC', 'PLT', 'RDW-CV', 'MPV'];
  const recs = ['H|\\^&|||BENCH^1^SN1|||||||P|1|' + ts, 'P|1', `O|1|S${n}||^^^CBC|R||${ts}||||||||||||||||||F`];
  for (let i = 0; i < RESULTS; i++) recs.push(`R|${i + 1}|^^^${codes[i % codes.length]}${i >= codes.length ? '-' + i : ''}|${(n + i) % 100}.${i}|10*3/uL|4.0 to 10.0|N||F||||${ts}`);
  recs.push('L|1|N');
  return encodeMessage(recs);
}

const bytes = message(0).reduce((a, f) => a + f.length, 0);
const lastFrameToCommit: number[] = [];
const t0 = performance.now();
for (let n = 0; n < sessions; n++) {
  const frames = message(n);
  let lastSent = 0;
  const res = await sendSession(line, frames, {
    mangle: (i, _a, f) => {
      if (i === frames.length - 1) lastSent = performance.now();
      return f;
    },
  });
  // sendSession returns after the ACK of the last frame, which the host sends after the commit.
  lastFrameToCommit.push(performance.now() - lastSent);
  if (!res.ok) throw new Error(`session ${n}: ${res.error}`);
}
const secs = (performance.now() - t0) / 1000;
lastFrameToCommit.sort((a, b) => a - b);
const obs = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation'`)).rows[0].n;
const pct = (p: number) => lastFrameToCommit[Math.min(lastFrameToCommit.length - 1, Math.floor((p / 100) * lastFrameToCommit.length))].toFixed(1);
console.log(`serial ASTM over pty @115200 baud, PGlite in memory: ${sessions} sessions x ${RESULTS} R records (${bytes} bytes framed each)`);
console.log(`  results filed:               ${obs} Observations, ${processed} messages`);
console.log(`  throughput:                  ${(obs / secs).toFixed(0)} results/s (${(sessions / secs).toFixed(1)} messages/s)`);
console.log(`  wire-time floor at 115200:   ${((bytes * 10) / 115200 * 1000).toFixed(1)} ms per message`);
console.log(`  last frame → committed (ACK): median ${pct(50)} ms, p95 ${pct(95)} ms, max ${pct(100)} ms`);
running.handler.close();
await running.port.stop();
await new Promise((r) => analyzer.close(r));
socat.kill();
await rt.close();
await db.close();
