/**
 * A Conflux cluster on this machine, each node a host of its own: `npm run cluster -- up [--nodes 3]`.
 *
 * Every node runs in a network namespace with its own IP (10.77.0.11, .12, …) on a bridge (cfx0, 10.77.0.1); a
 * PostgreSQL of its own (Debian's binaries, initdb into the cluster folder) listens on the bridge; HAProxy in front
 * listens on this machine's loopback (HTTP 8080, MLLP 2575, DIMSE 11112 by default) with the configuration of
 * tools/haproxy.ts. Blobs are in the database (BLOB_STORE=postgres): the nodes share nothing but PostgreSQL.
 *
 *   npm run cluster -- up [--nodes N] [--workers W] [--open] [--env K=V]…   start (root; iproute2, haproxy, postgresql)
 *   npm run cluster -- status                    each node's health, directly and through HAProxy
 *   npm run cluster -- kill <n>                  SIGKILL node n (a failure drill); `start <n>` brings it back
 *   npm run cluster -- down                      stop everything and remove the namespaces, bridge and folder
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ClusterNode, haproxyConfig, sessionsPerServer } from '../tools/haproxy.js';
import { postgresBinaries, startPostgres } from '../tools/postgres-instance.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIR = '/tmp/conflux-cluster';
const STATE = path.join(DIR, 'state.json');
const BRIDGE = 'cfx0';
const SUBNET = '10.77.0';

interface State {
  nodes: Array<ClusterNode & { netns: string; pid?: number; open: boolean }>;
  haproxyPid?: number;
  front: { host: string; http: number; mllp: number; dicom: number };
  databaseUrl: string;
  /** Server processes per node (default 1: several nodes on one 2-core machine). */
  workers: number;
  /** More settings for every node (`--env KEY=VALUE`, repeatable). */
  env: Record<string, string>;
}

const sh = (cmd: string, args: string[], opts: { quiet?: boolean } = {}) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: opts.quiet ? 'pipe' : ['ignore', 'pipe', 'inherit'] });
  } catch (err) {
    if (opts.quiet) return '';
    throw err;
  }
};

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] && !process.argv[i + 1].startsWith('--') ? process.argv[i + 1] : fallback;
}

function startClusterPostgres(): string {
  const pg = startPostgres({ dir: path.join(DIR, 'pg'), port: 5499, listen: `${SUBNET}.1,127.0.0.1`, trustNet: `${SUBNET}.0/24` });
  return pg.url('postgres');
}

function addNetns(n: number): string {
  const netns = `cfx-n${n}`;
  const host = `cfx-n${n}h`;
  sh('ip', ['netns', 'add', netns]);
  sh('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  sh('ip', ['link', 'set', host, 'master', BRIDGE, 'up']);
  sh('ip', ['-n', netns, 'addr', 'add', `${SUBNET}.${10 + n}/24`, 'dev', 'eth0']);
  sh('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  sh('ip', ['-n', netns, 'route', 'add', 'default', 'via', `${SUBNET}.1`]);
  return netns;
}

/** Starts one node's `npm start` build in its namespace, detached, logging to the cluster folder. */
function startNode(state: State, node: State['nodes'][number]): number {
  const log = openSync(path.join(DIR, `${node.name}.log`), 'a');
  const env = {
    ...process.env,
    DATABASE_URL: state.databaseUrl,
    BLOB_STORE: 'postgres',
    HOST: node.host,
    PORT: String(node.httpPort),
    MLLP_PORT: String(node.mllpPort),
    DICOM_PORT: String(node.dicomPort),
    BASE_URL: `http://${state.front.host}:${state.front.http}`,
    DATA_DIR: path.join(DIR, node.name),
    WORKERS: String(state.workers),
    ...state.env,
    ...(node.open ? { AUTH: 'off' } : {}),
  };
  const child = spawn('ip', ['netns', 'exec', node.netns, process.execPath, '--max-semi-space-size=8', path.join(ROOT, 'dist/src/cli.js'), 'serve'], { env, detached: true, stdio: ['ignore', log, log] });
  child.unref();
  closeSync(log);
  return child.pid!;
}

async function waitHealthy(url: string, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if ((await fetch(url).catch(() => undefined))?.ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not answer ${url} within 60 s (see ${DIR}/*.log)`);
}

async function up(): Promise<void> {
  if (existsSync(STATE)) throw new Error(`a cluster is already up (${STATE}); run "npm run cluster -- down" first`);
  const count = Number(flag('nodes', '3'));
  const open = process.argv.includes('--open');
  mkdirSync(DIR, { recursive: true });
  sh('npm', ['run', 'build', '--silent'], {});
  sh('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  sh('ip', ['addr', 'add', `${SUBNET}.1/24`, 'dev', BRIDGE]);
  sh('ip', ['link', 'set', BRIDGE, 'up']);
  const state: State = {
    nodes: [],
    front: { host: '127.0.0.1', http: Number(flag('http-port', '8080')), mllp: Number(flag('mllp-port', '2575')), dicom: Number(flag('dicom-port', '11112')) },
    databaseUrl: startClusterPostgres(),
    workers: Number(flag('workers', '1')),
    env: Object.fromEntries(
      process.argv.flatMap((a, i) => (a === '--env' && process.argv[i + 1]?.includes('=') ? [process.argv[i + 1].split(/=(.*)/s, 2) as [string, string]] : [])),
    ),
  };
  writeFileSync(STATE, JSON.stringify(state, null, 2));
  for (let n = 1; n <= count; n++) {
    state.nodes.push({ name: `node${n}`, netns: addNetns(n), host: `${SUBNET}.${10 + n}`, httpPort: 8080, mllpPort: 2575, dicomPort: 11112, open });
  }
  // The first node migrates; the others start once it serves (they would wait on the migration lock anyway).
  for (const node of state.nodes) {
    node.pid = startNode(state, node);
    writeFileSync(STATE, JSON.stringify(state, null, 2));
    if (node === state.nodes[0]) await waitHealthy(`http://${node.host}:${node.httpPort}/healthz`, node.name);
  }
  for (const node of state.nodes) await waitHealthy(`http://${node.host}:${node.httpPort}/healthz`, node.name);
  const cfg = path.join(DIR, 'haproxy.cfg');
  writeFileSync(cfg, haproxyConfig(state.front, state.nodes, { statsSocket: path.join(DIR, 'haproxy.sock') }));
  const haproxy = spawn('haproxy', ['-db', '-f', cfg], { detached: true, stdio: ['ignore', openSync(path.join(DIR, 'haproxy.log'), 'a'), openSync(path.join(DIR, 'haproxy.log'), 'a')] });
  haproxy.unref();
  state.haproxyPid = haproxy.pid;
  writeFileSync(STATE, JSON.stringify(state, null, 2));
  await waitHealthy(`http://${state.front.host}:${state.front.http}/healthz`, 'HAProxy');
  console.log(`cluster up: ${count} nodes (${state.nodes.map((n) => n.host).join(', ')}), PostgreSQL ${state.databaseUrl}`);
  console.log(`HTTP http://${state.front.host}:${state.front.http}  MLLP ${state.front.host}:${state.front.mllp}  DIMSE ${state.front.host}:${state.front.dicom}${open ? '  (AUTH=off)' : ''}`);
}

function readState(): State {
  if (!existsSync(STATE)) throw new Error('no cluster is up (npm run cluster -- up)');
  return JSON.parse(readFileSync(STATE, 'utf8')) as State;
}

const kill = (pid: number | undefined, signal: NodeJS.Signals) => {
  if (!pid) return;
  try {
    process.kill(-pid, signal); // the process group: `ip netns exec` and the node under it
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
};

function down(): void {
  const state = existsSync(STATE) ? (JSON.parse(readFileSync(STATE, 'utf8')) as State) : undefined;
  kill(state?.haproxyPid, 'SIGTERM');
  for (const node of state?.nodes ?? []) kill(node.pid, 'SIGTERM');
  const bin = postgresBinaries();
  if (bin && existsSync(path.join(DIR, 'pg', 'postmaster.pid'))) sh('runuser', ['-u', 'postgres', '--', `${bin}/pg_ctl`, '-D', path.join(DIR, 'pg'), '-m', 'fast', '-w', 'stop'], { quiet: true });
  for (const ns of sh('ip', ['netns', 'list'], { quiet: true }).split('\n')) {
    const name = ns.split(' ')[0];
    if (name?.startsWith('cfx-n')) sh('ip', ['netns', 'delete', name], { quiet: true });
  }
  sh('ip', ['link', 'delete', BRIDGE], { quiet: true });
  rmSync(DIR, { recursive: true, force: true });
  console.log('cluster down');
}

async function status(): Promise<void> {
  const state = readState();
  for (const node of state.nodes) {
    const h = await fetch(`http://${node.host}:${node.httpPort}/healthz`).then((r) => r.json() as Promise<{ status: string; pid: number }>).catch((e: Error) => ({ status: `down (${e.message})`, pid: undefined }));
    console.log(`${node.name} ${node.host}: ${h.status}${h.pid ? ` (pid ${h.pid})` : ''}`);
  }
  const f = await fetch(`http://${state.front.host}:${state.front.http}/healthz`).then((r) => `${r.status}`).catch((e: Error) => `down (${e.message})`);
  console.log(`HAProxy http://${state.front.host}:${state.front.http}: ${f}`);
  for (const s of sessionsPerServer(path.join(DIR, 'haproxy.sock'))) console.log(`  ${s.backend} ${s.server}: ${s.status}, ${s.sessions} sessions`);
}

const [command, arg] = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !(i > 0 && all[i - 1].startsWith('--') && all[i - 1] !== '--open'));
try {
  if (command === 'up') await up();
  else if (command === 'down') down();
  else if (command === 'status') await status();
  else if (command === 'kill' || command === 'start') {
    const state = readState();
    const node = state.nodes[Number(arg) - 1];
    if (!node) throw new Error(`no node ${arg} (1 to ${state.nodes.length})`);
    if (command === 'kill') kill(node.pid, 'SIGKILL');
    else node.pid = startNode(state, node);
    writeFileSync(STATE, JSON.stringify(state, null, 2));
    console.log(`${node.name}: ${command === 'kill' ? 'killed' : 'started'}`);
  } else {
    console.error('usage: npm run cluster -- up [--nodes N] [--open] | status | kill <n> | start <n> | down');
    process.exitCode = 2;
  }
} catch (err) {
  console.error(`cluster: ${(err as Error).message}`);
  process.exitCode = 1;
}
