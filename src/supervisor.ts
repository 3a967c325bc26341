/**
 * `serve` with WORKERS > 1 (docs/design.md, "Processes"): this process becomes the supervisor (the `node:cluster`
 * primary) of WORKERS server processes. Each worker runs the whole server (src/server.ts); the HTTP, MLLP and DIMSE
 * servers they open are shared through the primary's listening sockets, which hand connections to the workers in
 * turn. All state lives in PostgreSQL, and background work (export jobs, outbound delivery, ImagingStudy sync,
 * retention) is claimed from it, so no worker is special and any of them can die and be replaced.
 *
 * The supervisor itself loads no server code (it stays small), owns the one `server.json` and admin token the CLI
 * uses, restarts a worker that dies (with backoff, saying why), and stops them all gracefully on SIGTERM / SIGINT.
 * This module is also where both sides of that arrangement (worker handshake, server.json) live.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import type { Config } from './config.js';
import type { ListenPort } from './env.js';
import { makeLogger } from './facade.js';

const log = makeLogger('supervisor');

/** First restart delay after a worker dies; doubled on each further death of the same slot, up to RESTART_MAX_MS. */
const RESTART_BASE_MS = 1000;
const RESTART_MAX_MS = 30_000;
/** A worker that served this long before dying was healthy: its slot's backoff starts again from the base. */
const HEALTHY_AFTER_MS = 60_000;
/** How long the workers get to drain and stop (each cuts its own HTTP connections after 10 s) before they are killed. */
const STOP_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------------------------
// server.json: how a local CLI finds the running server and its admin token.

/** Where a running server tells local CLI invocations how to reach its admin API. */
export function serverInfoPath(config: Config): string {
  return path.join(config.dataDir, 'server.json');
}

export async function writeServerInfo(config: Config, url: string, adminToken: string, extra: Record<string, unknown> = {}): Promise<void> {
  await mkdir(config.dataDir, { recursive: true });
  // Readable only by this user: the token grants the whole admin API.
  await writeFile(serverInfoPath(config), JSON.stringify({ url, pid: process.pid, adminToken, ...extra }), { mode: 0o600 });
}

/** Removes server.json only if it still describes this process (never another server's). */
export async function removeOwnServerInfo(config: Config): Promise<void> {
  const file = serverInfoPath(config);
  try {
    const info = JSON.parse(await readFile(file, 'utf8')) as { pid?: number };
    if (info.pid === process.pid) await rm(file, { force: true });
  } catch {
    /* already gone */
  }
}

/** The address a local CLI can reach: loopback when listening on every interface. */
export function localHost(config: Config): string {
  return ['0.0.0.0', '::'].includes(config.host) ? '127.0.0.1' : config.host;
}

// ---------------------------------------------------------------------------------------------------------------
// The worker's side of the handshake.

/** Worker → primary: ready to receive the start message (a message sent before a listener exists would be lost). */
interface HelloMessage {
  type: 'conflux:hello';
}
/** Primary → worker: what every worker must share and the environment cannot carry safely. */
export interface StartMessage {
  type: 'conflux:start';
  /** The admin token in server.json: every worker accepts it, whichever one the CLI's connection lands on. */
  adminToken: string;
  /** 0 … WORKERS-1, kept by a restarted worker: duties only one process may have (serial ports) go to slot 0. */
  slot: number;
}
/** Worker → primary: listening and serving. */
interface ReadyMessage {
  type: 'conflux:ready';
  url: string;
}

const isMessage = <T extends { type: string }>(m: unknown, type: T['type']): m is T =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type;

/** True in a server process started by the supervisor. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/** In a worker: asks the primary for the start message and waits for it. */
export function receiveStart(): Promise<StartMessage> {
  return new Promise((resolve) => {
    const onMessage = (m: unknown) => {
      if (!isMessage<StartMessage>(m, 'conflux:start')) return;
      process.off('message', onMessage);
      resolve(m);
    };
    process.on('message', onMessage);
    process.send!({ type: 'conflux:hello' } satisfies HelloMessage);
  });
}

/** In a worker: tells the primary that this process serves. */
export function reportReady(url: string): void {
  process.send!({ type: 'conflux:ready', url } satisfies ReadyMessage);
}

// ---------------------------------------------------------------------------------------------------------------
// The primary.

/**
 * Ports the workers will listen on. A listener on port 0 would get a random port per worker (or, through the cluster,
 * one shared only by chance of listen order), and server.json must name the port before any worker starts: so the
 * supervisor picks free ports for the 0s first, holding all of them open at once so that they differ.
 */
async function resolvePorts(config: Config): Promise<{ port: number; listeners: ListenPort[] }> {
  const held: net.Server[] = [];
  const pick = async (wanted: number): Promise<number> => {
    if (wanted !== 0) return wanted;
    const s = net.createServer();
    held.push(s);
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(0, config.host, () => resolve());
    });
    return (s.address() as AddressInfo).port;
  };
  try {
    const port = await pick(config.port);
    const listeners: ListenPort[] = [];
    for (const p of Object.values(config.plugins).flatMap((c) => c.ports ?? [])) listeners.push({ ...p, port: await pick(p.port) });
    return { port, listeners };
  } finally {
    await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
  }
}

/** One of the WORKERS places: a new worker (with a new cluster worker id) takes a dead one's place, and its backoff. */
interface Slot {
  worker?: Worker;
  readyAt?: number;
  /** Deaths since this slot last served for HEALTHY_AFTER_MS. */
  failures: number;
  restartTimer?: NodeJS.Timeout;
}

/**
 * Runs the supervisor until SIGTERM / SIGINT has stopped every worker, or until a worker of the first start fails
 * (a configuration or database error every worker would hit). Resolves to the process's exit code.
 */
export async function superviseWorkers(config: Config): Promise<number> {
  if (!cluster.isPrimary) throw new Error('superviseWorkers runs in the primary process only');
  // Until the workers exist a signal has nothing to drain: leave no server.json behind.
  const early = (signal: NodeJS.Signals) => {
    void removeOwnServerInfo(config).finally(() => process.exit(signal === 'SIGTERM' ? 0 : 130));
  };
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  const ports = await resolvePorts(config);
  const adminToken = randomBytes(32).toString('base64url');
  const url = `http://${localHost(config)}:${ports.port}`;
  // Written before the ports open, as a single server does, so a CLI that finds /healthz up also finds the token.
  await writeServerInfo(config, url, adminToken, { workers: config.workers });
  const workerEnv = { PORT: String(ports.port), ...Object.fromEntries(ports.listeners.map((l) => [l.variable, String(l.port)])) };

  const slots: Slot[] = Array.from({ length: config.workers }, () => ({ failures: 0 }));
  let stopping = false;
  let starting = true;
  let resolveExit!: (code: number) => void;
  const exited = new Promise<number>((r) => (resolveExit = r));
  let exitCode = 0;

  const live = () => slots.flatMap((s) => (s.worker ? [s.worker] : []));

  /** Forks the worker of a slot; resolves when it serves, rejects when it dies first. */
  const fork = (slot: Slot): Promise<void> =>
    new Promise((resolve, reject) => {
      if (stopping) return resolve();
      const worker = cluster.fork(workerEnv);
      const pid = worker.process.pid;
      slot.worker = worker;
      slot.readyAt = undefined;
      worker.on('message', (m: unknown) => {
        if (isMessage<HelloMessage>(m, 'conflux:hello')) worker.send({ type: 'conflux:start', adminToken, slot: slots.indexOf(slot) } satisfies StartMessage);
        else if (isMessage<ReadyMessage>(m, 'conflux:ready')) {
          slot.readyAt = Date.now();
          log.info(`worker ${worker.id} (pid ${pid}) serving`);
          resolve();
        }
      });
      worker.once('exit', (code, signal) => {
        slot.worker = undefined;
        const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const served = slot.readyAt !== undefined ? Date.now() - slot.readyAt : undefined;
        if (served === undefined) reject(new Error(`worker ${worker.id} (pid ${pid}) ${why} before it was serving`));
        if (stopping) {
          if (code !== 0) exitCode = 1;
          if (live().length === 0) resolveExit(exitCode);
          return;
        }
        // A worker of the first start that never served fails the start (its caller stops everything).
        if (starting && served === undefined) return;
        // Neither asked for nor expected (a crash, an out-of-memory kill, an operator's kill): replace it.
        if (served !== undefined && served >= HEALTHY_AFTER_MS) slot.failures = 0;
        const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** slot.failures);
        slot.failures++;
        log.error(`worker ${worker.id} (pid ${pid}) ${why}${served !== undefined ? ` after serving ${Math.round(served / 1000)} s` : ''}; starting a new worker in its place in ${delay / 1000} s`);
        slot.restartTimer = setTimeout(() => {
          slot.restartTimer = undefined;
          if (!stopping) fork(slot).catch((err: Error) => log.error(err.message));
        }, delay);
      });
    });

  const stop = (signal: string) => {
    if (stopping) {
      // A second Ctrl-C: do not wait for the drain.
      log.warn(`${signal} while stopping: killing the workers`);
      for (const w of live()) w.process.kill('SIGKILL');
      return;
    }
    stopping = true;
    log.info(`${signal}: stopping ${live().length} worker(s)`);
    for (const s of slots) if (s.restartTimer) clearTimeout(s.restartTimer);
    if (live().length === 0) resolveExit(exitCode);
    // Each worker's own SIGTERM handler drains its requests, stops its listeners and workers, closes its database.
    for (const w of live()) w.process.kill('SIGTERM');
    const force = setTimeout(() => {
      log.error(`workers still running after ${STOP_TIMEOUT_MS / 1000} s: killing them`);
      exitCode = 1;
      for (const w of live()) w.process.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    force.unref();
  };
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Ctrl-C reaches the whole process group; the workers ignore SIGINT and wait for the supervisor's SIGTERM.
  process.on('SIGINT', () => stop('SIGINT'));

  log.info(`starting ${config.workers} workers; HTTP ${url}${ports.listeners.map((l) => `, ${l.label} :${l.port}`).join('')}`);
  try {
    // The first worker alone: one-time work at start (migrations, the first signing key, the worklist backfill)
    // then happens once, and an error every worker would hit (configuration, database) is reported once.
    await fork(slots[0]);
    await Promise.all(slots.slice(1).map(fork));
    starting = false;
    log.info(`${config.workers} workers serving`);
  } catch (err) {
    starting = false;
    if (!stopping) {
      log.error(`${(err as Error).message}; stopping`);
      exitCode = 1;
      stop('a failed start');
    }
  }
  const code = await exited;
  await removeOwnServerInfo(config);
  log.info('stopped');
  return code;
}
