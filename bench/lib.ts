import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/** Latency percentiles (ms) of a list of samples. */
export function percentiles(samples: number[], ps = [50, 95, 99]): Record<string, number> {
  const s = [...samples].sort((a, b) => a - b);
  const out: Record<string, number> = {};
  for (const p of ps) out[`p${p}`] = Number((s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN).toFixed(2));
  return out;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** A small keep-alive HTTP client: fetch's per-request overhead would dominate loopback figures. */
export function request(
  method: string,
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      url,
      {
        method,
        agent,
        headers: { ...(data ? { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(data) } : {}), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** Runs `total` jobs with `concurrency` workers; returns wall time (ms) and each job's latency (ms). */
export async function runConcurrent(total: number, concurrency: number, job: (i: number) => Promise<void>): Promise<{ ms: number; latencies: number[] }> {
  let next = 0;
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const t = performance.now();
        await job(i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { ms: performance.now() - start, latencies };
}

export interface BenchServer {
  url: string;
  /** The MLLP listener's port. */
  mllpPort: number;
  child: ChildProcess;
  /** Peak resident set size (MB) of the server's processes together, sampled every 100 ms. */
  peakRssMb(): number;
  stop(): Promise<void>;
}

/** The command `npm start` runs (the compiled build), built first so a benchmark measures the current sources. */
export function serverCommand(): string[] {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const build = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed: the benchmark would measure stale code');
  // The build's second step: the compact R4 definitions the server loads (src/fhir/definitions-compact.ts).
  if (spawnSync(process.execPath, [path.join(root, 'dist', 'src', 'fhir', 'definitions-compact.js')], { stdio: 'inherit' }).status !== 0) {
    throw new Error('writing the compact FHIR definitions failed');
  }
  return ['--max-semi-space-size=8', '--expose-gc', path.join(root, 'dist', 'src', 'cli.js'), 'serve'];
}

/** The pids of a process and its children (a supervisor and its workers). */
function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number) => {
    out.push(p);
    try {
      for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').split(' ').filter(Boolean)) visit(Number(c));
    } catch {
      /* process gone */
    }
  };
  visit(pid);
  return out;
}

/** CPU time (ms, user + system) a process and its children have used so far: the server's cost, apart from the client's. */
export function treeCpuMs(pid: number): number {
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  let ms = 0;
  for (const p of processTree(pid)) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ms += (Number(fields[11]) + Number(fields[12])) * tick;
    } catch {
      /* process gone */
    }
  }
  return ms;
}

/** Resident set size (MB) of a process and its children (a supervisor and its workers). */
export function treeRssMb(pid: number): number {
  let kb = 0;
  const visit = (p: number) => {
    try {
      kb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
      for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').split(' ').filter(Boolean)) visit(Number(c));
    } catch {
      /* process gone */
    }
  };
  visit(pid);
  return kb / 1024;
}

/**
 * Starts `npm start`'s server (compiled) as a separate process (so client and server do not share an event loop),
 * on DATABASE_URL when set, otherwise PGlite in a fresh temporary DATA_DIR. One worker unless `env.WORKERS` says
 * otherwise, so figures of different runs compare.
 */
export async function startBenchServer(env: Record<string, string> = {}): Promise<BenchServer> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const mllpPort = port + 1;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-bench-'));
  const child = spawn(process.execPath, serverCommand(), {
    env: { ...process.env, AUTH: 'off', PORT: String(port), MLLP_PORT: String(mllpPort), DICOM_PORT: '0', DATA_DIR: dataDir, WORKERS: '1', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      if ((await request('GET', `${url}/healthz`)).status === 200) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, treeRssMb(child.pid!))), 100);
  return {
    url,
    mllpPort,
    child,
    peakRssMb: () => Math.round(peak),
    async stop() {
      clearInterval(timer);
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

/**
 * A fresh schema on a PostgreSQL URL for one benchmark run, so rows of earlier runs do not move its figures:
 * its name, the URL with search_path set to it, and how to drop it.
 */
export async function scratchSchema(url: string, prefix: string): Promise<{ schema: string; url: string; drop(): Promise<void> }> {
  const schema = `${prefix}_${randomBytes(4).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(sql).finally(() => c.end());
  };
  await admin(`CREATE SCHEMA ${schema}`);
  const scoped = new URL(url);
  scoped.searchParams.set('options', `-c search_path=${schema},public`);
  return { schema, url: scoped.toString(), drop: () => admin(`DROP SCHEMA ${schema} CASCADE`) };
}
