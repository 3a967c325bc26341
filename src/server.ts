import type { Duplex } from 'node:stream';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.js';
import { makeLogger } from './facade.js';
import { startPlugins } from './plugins.js';
import { createRuntime, type Runtime } from './runtime.js';
import { startExportWorker } from './export/index.js';
import { startMessagePruner } from './messages/pruner.js';
import { localHost, removeOwnServerInfo, serverInfoPath, writeServerInfo } from './supervisor.js';

export { serverInfoPath };

const log = makeLogger('server');

export interface RunningServer {
  runtime: Runtime;
  http: http.Server;
  url: string;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Use this database (tests): then no server.json is written either. */
  db?: Runtime['db'];
  /**
   * One of the supervisor's workers (src/supervisor.ts): the supervisor owns server.json, and every worker accepts
   * its admin token, whichever worker a CLI's connection reaches.
   */
  supervised?: { adminToken: string; slot: number };
}

/** Starts HTTP and every plug-in's listeners; `stop` drains in-flight requests, then closes everything. */
export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const runtime = await createRuntime(config, { db: opts.db });
  if (opts.supervised) {
    runtime.adminToken = opts.supervised.adminToken;
    runtime.workerSlot = opts.supervised.slot;
  }
  const ownsInfoFile = !opts.db && !opts.supervised;
  const facades = await startPlugins(runtime, true);
  startExportWorker(runtime);
  startMessagePruner(runtime, log);
  if (!config.authEnabled) {
    const bar = '!'.repeat(78);
    log.warn(`\n${bar}\n!! AUTH=off: every FHIR, DICOMweb and admin request is served WITHOUT authorization.\n!! For local exploration only. Never expose this server to a network or real patient data.\n${bar}`);
  }
  // Written before the port opens when the port is known, so a CLI that finds /healthz up also finds it.
  const writeInfo = async (url: string) => {
    if (ownsInfoFile) await writeServerInfo(config, url, runtime.adminToken);
  };
  const local = localHost(config);
  if (config.port !== 0) await writeInfo(`http://${local}:${config.port}`);
  const server = http.createServer(runtime.app);
  server.keepAliveTimeout = 65_000;
  server.on('clientError', answerClientError);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
  } catch (err) {
    if (ownsInfoFile) await removeOwnServerInfo(config);
    await runtime.close();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${local}:${port}`;
  if (!config.baseUrlFixed && config.port === 0) {
    // An ephemeral port (tests) is only known now: links and Location headers must carry it.
    config.baseUrl = `http://localhost:${port}`;
    config.fhirBaseUrl = `${config.baseUrl}/fhir`;
    runtime.router.ctx.baseUrl = config.fhirBaseUrl;
  }
  if (config.port === 0) await writeInfo(url);
  log.info(`FHIR R4 at ${config.fhirBaseUrl} (listening on :${port}), database ${runtime.db.kind}`);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info('stopping: no new connections, draining in-flight requests');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Keep-alive connections become idle as their last response goes out: close each then, not after
      // the keep-alive timeout; anything still open after 10 s is cut.
      const reap = setInterval(() => server.closeIdleConnections(), 50);
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), 10_000);
      await closed;
      clearInterval(reap);
      clearTimeout(force);
      for (const f of facades.reverse()) await f.stop().catch((err) => log.error(`facade stop: ${(err as Error).message}`));
      await runtime.close();
      if (ownsInfoFile) await removeOwnServerInfo(config);
      log.info('stopped');
    })());
  return { runtime, http: server, url, stop };
}

/**
 * Requests Node refuses before Express sees them (headers or URL over 16 KB, malformed HTTP) get an OperationOutcome
 * that names the problem, not an empty 400/431.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable) return;
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request';
  const diagnostics = tooLarge
    ? 'The request line and headers are larger than 16 KB (a URL that long: send the search as POST [type]/_search with a form body)'
    : `The request is not valid HTTP/1.1 (${err.code ?? err.message})`;
  const body = JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: tooLarge ? 'too-costly' : 'structure', diagnostics }] });
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/fhir+json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}
