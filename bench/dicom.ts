/**
 * DICOM benchmark: C-STORE instances/s and MB/s with DCMTK's storescu over 1 and 4 associations
 * (2,000 small CT instances each), STOW-RS (50 instances per request, 4 concurrent requests),
 * QIDO-RS latency p50/p99 and the server's peak RSS, plus the RSS after storing one large instance
 * (memory must not grow with instance size). Orthanc (Debian `orthanc`, + `orthanc-dicomweb` for STOW)
 * runs side by side as the reference when installed.
 *   npx tsx bench/dicom.ts [instances=2000] [bigInstanceMB=256]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildPart10Header } from '../facades/dicom/part10.js';
import { percentiles, request, startBenchServer } from './lib.js';
import { makeInstances } from '../tools/dicom-instances.js';

const N = Number(process.argv[2] ?? 2000);
const BIG_MB = Number(process.argv[3] ?? 256);
const work = mkdtempSync(path.join(os.tmpdir(), 'conflux-bench-dicom-'));
const env = { ...process.env, TCP_NODELAY: '1' };

/** One Secondary Capture instance with `mb` MB of (uncompressed) OB pixel data, written without holding it in memory. */
function makeBigInstance(file: string, mb: number): void {
  const sopClass = '1.2.840.10008.5.1.4.1.1.7';
  const sopUid = `2.25.${Date.now()}`;
  const el = (g: number, e: number, vr: string, value: Buffer) => {
    const long = ['OB', 'OW', 'SQ', 'UN', 'UT'].includes(vr);
    const h = Buffer.alloc(long ? 12 : 8);
    h.writeUInt16LE(g, 0);
    h.writeUInt16LE(e, 2);
    h.write(vr, 4, 'ascii');
    if (long) h.writeUInt32LE(value.length, 8);
    else h.writeUInt16LE(value.length, 6);
    return Buffer.concat([h, value]);
  };
  const txt = (s: string, pad = ' ') => Buffer.from(s.length % 2 ? s + pad : s, 'ascii');
  const us = (n: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(n);
    return b;
  };
  const side = Math.floor(Math.sqrt(mb * 1024 * 1024));
  const ds = Buffer.concat([
    el(0x0008, 0x0016, 'UI', txt(sopClass, '\0')),
    el(0x0008, 0x0018, 'UI', txt(sopUid, '\0')),
    el(0x0008, 0x0060, 'CS', txt('OT')),
    el(0x0010, 0x0010, 'PN', txt('Big^Instance')),
    el(0x0010, 0x0020, 'LO', txt('BIG1')),
    el(0x0020, 0x000d, 'UI', txt(`${sopUid}.1`, '\0')),
    el(0x0020, 0x000e, 'UI', txt(`${sopUid}.2`, '\0')),
    el(0x0028, 0x0002, 'US', us(1)),
    el(0x0028, 0x0004, 'CS', txt('MONOCHROME2')),
    el(0x0028, 0x0010, 'US', us(side)),
    el(0x0028, 0x0011, 'US', us(side)),
    el(0x0028, 0x0100, 'US', us(8)),
    el(0x0028, 0x0101, 'US', us(8)),
    el(0x0028, 0x0102, 'US', us(7)),
    el(0x0028, 0x0103, 'US', us(0)),
  ]);
  const pixels = side * side + ((side * side) % 2);
  const head = Buffer.alloc(12);
  head.writeUInt16LE(0x7fe0, 0);
  head.writeUInt16LE(0x0010, 2);
  head.write('OB', 4, 'ascii');
  head.writeUInt32LE(pixels, 8);
  const fd = openSync(file, 'w');
  writeSync(fd, buildPart10Header(sopClass, sopUid, '1.2.840.10008.1.2.1'));
  writeSync(fd, ds);
  writeSync(fd, head);
  const chunk = Buffer.alloc(1024 * 1024, 0x55);
  for (let left = pixels; left > 0; left -= chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, left));
  closeSync(fd);
}

function storescu(port: number, aec: string, dirs: string[]): Promise<number> {
  const t = performance.now();
  return Promise.all(
    dirs.map(
      (d) =>
        new Promise<void>((resolve, reject) => {
          const c = spawn('storescu', ['-aet', 'BENCH', '-aec', aec, '+sd', '127.0.0.1', String(port), d], { env, stdio: ['ignore', 'ignore', 'pipe'] });
          let err = '';
          c.stderr.on('data', (b) => (err += b));
          c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`storescu exited ${code}: ${err.slice(0, 400)}`))));
        }),
    ),
  ).then(() => performance.now() - t);
}

function split(files: string[], dir: string, parts: number): string[] {
  const dirs = Array.from({ length: parts }, (_, i) => path.join(dir, `part${i}`));
  dirs.forEach((d) => mkdirSync(d, { recursive: true }));
  files.forEach((f, i) => spawnSync('mv', [f, dirs[i % parts]]));
  return dirs;
}

async function stow(url: string, files: string[], batch = 50, concurrency = 4): Promise<number> {
  const batches: string[][] = [];
  for (let i = 0; i < files.length; i += batch) batches.push(files.slice(i, i + batch));
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const b = batches[next++];
        if (!b) return;
        const boundary = 'bench-boundary-0123456789';
        const body = Buffer.concat([...b.flatMap((f) => [Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), readFileSync(f), Buffer.from('\r\n')]), Buffer.from(`--${boundary}--\r\n`)]);
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, accept: 'application/dicom+json' }, body });
        if (res.status !== 200) throw new Error(`STOW ${res.status}: ${(await res.text()).slice(0, 300)}`);
        await res.arrayBuffer();
      }
    }),
  );
  return performance.now() - t;
}

function rate(n: number, ms: number, bytes: number): string {
  return `${Math.round(n / (ms / 1000))} instances/s, ${(bytes / 1024 / 1024 / (ms / 1000)).toFixed(1)} MB/s`;
}

async function startOrthanc(): Promise<{ dicomPort: number; httpPort: number; stow: boolean; child: ChildProcess; stop(): Promise<void> } | undefined> {
  if (spawnSync('which', ['Orthanc']).status !== 0) return undefined;
  const dir = path.join(work, 'orthanc');
  mkdirSync(dir, { recursive: true });
  const httpPort = 30000 + Math.floor(Math.random() * 5000);
  const dicomPort = httpPort + 1;
  const plugin = ['/usr/share/orthanc/plugins/libOrthancDicomWeb.so', '/usr/lib/orthanc/plugins/libOrthancDicomWeb.so'].find(existsSync);
  const cfg = {
    Name: 'bench',
    StorageDirectory: path.join(dir, 'storage'),
    IndexDirectory: path.join(dir, 'index'),
    HttpPort: httpPort,
    DicomPort: dicomPort,
    DicomAet: 'ORTHANC',
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    DicomCheckCalledAet: false,
    StorageCompression: false,
    OverwriteInstances: true,
    Plugins: plugin ? [plugin] : [],
    DicomWeb: { Enable: true, Root: '/dicom-web/' },
  };
  writeFileSync(path.join(dir, 'orthanc.json'), JSON.stringify(cfg));
  const child = spawn('Orthanc', [path.join(dir, 'orthanc.json')], { env, stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await request('GET', `http://127.0.0.1:${httpPort}/system`)).status === 200) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    dicomPort,
    httpPort,
    stow: !!plugin,
    child,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

async function main(): Promise<void> {
  const size = readFileSync(makeInstances(path.join(work, 'size'), 1, 'S')[0]).length;
  console.log(`DICOM bench: ${N} instances of ${(size / 1024).toFixed(0)} KB (CT_small.dcm, 100 per study) per run; DCMTK storescu with TCP_NODELAY=1`);
  const set = (tag: string) => makeInstances(path.join(work, tag), N, tag);
  const dicomPort = 40000 + Math.floor(Math.random() * 5000);
  const server = await startBenchServer({ DICOM_PORT: String(dicomPort), DICOM_ACCEPT_ANY_AE: 'true' });
  const rows: string[][] = [];
  try {
    const a = set('1');
    const one = await storescu(dicomPort, 'CONFLUX', [path.join(work, '1')]);
    const b = set('2');
    const four = await storescu(dicomPort, 'CONFLUX', split(b, path.join(work, '2x'), 4));
    const c = set('3');
    const st = await stow(`${server.url}/dicomweb/studies`, c);
    rows.push(['Conflux', rate(a.length, one, a.length * size), rate(b.length, four, b.length * size), rate(c.length, st, c.length * size)]);

    // QIDO latency on the populated index.
    const lat: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      const q = i % 3 === 0 ? '/dicomweb/studies?limit=20' : i % 3 === 1 ? `/dicomweb/studies?PatientName=Compressed*&StudyDate=20000101-&limit=20` : `/dicomweb/studies?StudyInstanceUID=1.3.6.1.4.1.5962.1.2.1.20040119072730.${'1'}${String(i % 20).padStart(5, '0')}`;
      const r = await request('GET', `${server.url}${q}`);
      if (r.status !== 200 && r.status !== 204) throw new Error(`QIDO ${r.status}`);
      lat.push(performance.now() - t);
    }
    const p = percentiles(lat, [50, 99]);
    const rssBefore = server.peakRssMb();
    const big = path.join(work, 'big.dcm');
    makeBigInstance(big, BIG_MB);
    const tb = performance.now();
    const bigOk = spawnSync('storescu', ['-aet', 'BENCH', '-aec', 'CONFLUX', '127.0.0.1', String(dicomPort), big], { env }).status === 0;
    const bigMs = performance.now() - tb;
    await new Promise((r) => setTimeout(r, 500));
    console.log(`QIDO-RS latency over ${N * 3} instances / ${Math.ceil((N * 3) / 100)} studies: p50 ${p.p50} ms, p99 ${p.p99} ms`);
    console.log(`Conflux peak RSS: ${rssBefore} MB after the small-instance runs; ${server.peakRssMb()} MB after C-STORE of one ${BIG_MB} MB instance (${bigOk ? 'stored' : 'FAILED'} in ${(bigMs / 1000).toFixed(1)} s)`);
  } finally {
    await server.stop();
  }

  const orthanc = await startOrthanc();
  if (!orthanc) console.log('Orthanc not installed (apt-get install orthanc orthanc-dicomweb): no reference figures');
  else {
    try {
      const a = readdirSync(path.join(work, '1')).map((f) => path.join(work, '1', f));
      const one = await storescu(orthanc.dicomPort, 'ORTHANC', [path.join(work, '1')]);
      const b = set('5');
      const four = await storescu(orthanc.dicomPort, 'ORTHANC', split(b, path.join(work, '5x'), 4));
      let stowRate = 'n/a (orthanc-dicomweb not installed)';
      if (orthanc.stow) {
        const c = set('6');
        stowRate = rate(c.length, await stow(`http://127.0.0.1:${orthanc.httpPort}/dicom-web/studies`, c), c.length * size);
      }
      rows.push(['Orthanc', rate(a.length, one, a.length * size), rate(b.length, four, b.length * size), stowRate]);
    } finally {
      await orthanc.stop();
    }
  }
  console.log('');
  console.log('| server | C-STORE, 1 association | C-STORE, 4 associations | STOW-RS (50/request, 4 concurrent) |');
  console.log('| --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  spawnSync('rm', ['-rf', work]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
