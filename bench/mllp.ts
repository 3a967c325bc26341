/**
 * HL7 v2 inbound benchmark: parse-only rate, and end-to-end messages/s with ACK latency p50/p99 for a
 * 10-OBX ORU^R01 over 16 concurrent MLLP connections, on PGlite (in memory) and on PostgreSQL when
 * DATABASE_URL is set (in a scratch schema, dropped afterwards, so earlier runs' rows do not move the figure).
 * Each message has a new patient and order so every one is a real write.
 *   npx tsx bench/mllp.ts [messagesPerConnection=100]
 */
import net from 'node:net';
import { scratchSchema } from './lib.js';
import { loadConfig } from '../src/config.js';
import { createRuntime } from '../src/runtime.js';
import { openDatabase } from '../src/db/open.js';
import { frame, MllpDecoder } from '../facades/hl7v2/mllp.js';
import { splitEnvelope } from '../facades/hl7v2/envelope.js';
import { Hl7v2Message } from '../facades/hl7v2/message.js';
import { mapMessage } from '../facades/hl7v2/inbound/map-message.js';
import { DEFAULT_MAPPING } from '../facades/hl7v2/inbound/mapping-config.js';
import { inboundDeps } from '../facades/hl7v2/index.js';
import { startMllpListener } from '../facades/hl7v2/inbound/listener.js';

const PER_CONN = Number(process.argv[2] ?? 100);
const CONNS = 16;
const run = `${process.pid}-${Date.now()}`;

function oru(n: number): string {
  const obx = Array.from({ length: 10 }, (_, i) => `OBX|${i + 1}|NM|${2000 + i}-${i}^Analyte ${i}^LN||${(Math.random() * 100).toFixed(1)}|mg/dL^mg/dL^UCUM|10-90|N|||F|||20240102020000+0100`);
  return [
    `MSH|^~\\&|BENCH|LAB|CONFLUX|HOSP|20240102030405+0100||ORU^R01^ORU_R01|${run}-${n}|P|2.5.1`,
    `PID|1||B${run}-${n}^^^HOSP^MR||Bench^Pat||19800101|F`,
    `OBR|1|P${run}-${n}^EHR|F${run}-${n}^LAB|24331-1^Panel^LN|||20240102010000+0100||||||||||||||||||F`,
    ...obx,
  ].join('\r');
}

function parseOnly(): void {
  const msg = oru(0);
  const buf = Buffer.from(msg);
  const n = 20_000;
  let t = performance.now();
  for (let i = 0; i < n; i++) Hl7v2Message.parse(splitEnvelope(buf).messages[0]!);
  const parse = n / ((performance.now() - t) / 1000);
  t = performance.now();
  for (let i = 0; i < n; i++) mapMessage(Hl7v2Message.parse(splitEnvelope(buf).messages[0]!), DEFAULT_MAPPING);
  const map = n / ((performance.now() - t) / 1000);
  console.log(`parse only (10-OBX ORU^R01): ${Math.round(parse)} msgs/s; parse + map to a Bundle: ${Math.round(map)} msgs/s`);
}

/** 16 connections, each sending its messages one after another as soon as the previous ACK arrived. */
async function drive(port: number): Promise<{ latencies: number[]; secs: number; errors: number }> {
  const latencies: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONNS }, (_, c) =>
      new Promise<void>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1');
        s.setNoDelay(true);
        let i = 0;
        let sent = 0;
        const next = () => {
          if (i >= PER_CONN) {
            s.end();
            resolve();
            return;
          }
          sent = performance.now();
          s.write(frame(oru(c * PER_CONN + i)));
        };
        const dec = new MllpDecoder({
          frame: (p) => {
            latencies.push(performance.now() - sent);
            if (!p.includes('MSA|AA|')) errors++;
            i++;
            next();
          },
        });
        s.on('data', (d) => dec.push(d));
        s.on('error', reject);
        s.on('connect', next);
      }),
    ),
  );
  latencies.sort((a, b) => a - b);
  return { latencies, secs: (performance.now() - t0) / 1000, errors };
}

const pct = (latencies: number[], p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!.toFixed(1);

/** The anchor: a bare Node MLLP server that frames and answers each message with a fixed ACK, nothing else. */
async function rawAnchor(): Promise<number> {
  const ack = frame(Buffer.from('MSH|^~\\&|CONFLUX|HOSP|BENCH|LAB|20240102030405||ACK^R01^ACK|1|P|2.5.1\rMSA|AA|1'));
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    const dec = new MllpDecoder({ frame: () => sock.write(ack) });
    sock.on('data', (d) => dec.push(d));
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { latencies, secs } = await drive((server.address() as net.AddressInfo).port);
  await new Promise((r) => server.close(r));
  const rate = latencies.length / secs;
  console.log(`anchor, a bare Node MLLP server (frame + fixed ACK): ${Math.round(rate)} msgs/s, ACK p50 ${pct(latencies, 50)} ms, p99 ${pct(latencies, 99)} ms`);
  return rate;
}

async function endToEnd(label: string, anchor: number, databaseUrl?: string): Promise<void> {
  const db = await openDatabase({ databaseUrl, dataDir: null });
  const config = loadConfig({ AUTH: 'off', PORT: '0' });
  const rt = await createRuntime(config, { db });
  const quiet = { info: () => undefined, warn: () => undefined, error: (m: string) => console.error(m) };
  const deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, config, log: quiet });
  const listener = await startMllpListener(deps, { port: 0, host: '127.0.0.1' });
  const cpu0 = process.cpuUsage();
  const { latencies, secs, errors } = await drive(listener.port);
  const cpu = process.cpuUsage(cpu0);
  const rate = latencies.length / secs;
  console.log(
    `${label}: ${latencies.length} ORU^R01 (10 OBX) over ${CONNS} connections: ${Math.round(rate)} msgs/s end to end (${(rate / anchor).toFixed(3)} × the bare anchor), ACK p50 ${pct(latencies, 50)} ms, p99 ${pct(latencies, 99)} ms${errors ? `, ${errors} not AA` : ''}; ` +
      `this process (server and the bench's clients) used ${((cpu.user + cpu.system) / 1000 / latencies.length).toFixed(1)} ms CPU a message`,
  );
  await listener.close();
  await rt.db.close();
}

parseOnly();
const anchor = await rawAnchor();
await endToEnd('PGlite (in memory)', anchor);
if (process.env.DATABASE_URL) {
  const scratch = await scratchSchema(process.env.DATABASE_URL, 'bench_mllp');
  try {
    await endToEnd('PostgreSQL', anchor, scratch.url);
  } finally {
    await scratch.drop();
  }
} else console.log('PostgreSQL: skipped (set DATABASE_URL)');
