/** The operator commands, run as an operator would (`conflux destination add …`) against a running server. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { makeLogger, type FacadeContext } from '../../src/facade.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { startOutbound, type OutboundHandle } from '../../facades/hl7v2/outbound/index.js';
import { startPeer, type Peer } from './peer.js';

const run = promisify(execFile);

describe('conflux destination / outbound commands', () => {
  let dir: string;
  let server: RunningServer;
  let outbound: OutboundHandle;
  let peer: Peer;
  const cli = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args, '--json'], { env: { ...process.env, DATA_DIR: dir, AUTH: 'off' } });
    return JSON.parse(stdout);
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'conflux-cli-'));
    peer = await startPeer();
    server = await startServer(loadConfig({ AUTH: 'off', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: dir, HL7_OUTBOUND_POLL_MS: '20' }));
    const rt = server.runtime;
    outbound = await startOutbound(Object.assign(Object.create(rt), { log: { ...makeLogger('out'), info: () => undefined }, listen: true, runtime: rt }) as FacadeContext);
  }, 60_000);
  afterAll(async () => {
    await outbound?.stop();
    await server?.stop();
    await peer?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('adds, lists, pauses and resumes a destination', async () => {
    const added = await cli('destination', 'add', '--name', 'epic-results', '--host', '127.0.0.1', '--port', String(peer.port), '--profile', 'epic', '--types', 'ORU,ORM',
      '--ack-timeout', '5000', '--retry-initial-ms', '500', '--filter', 'DiagnosticReport?category=LAB', '--receiving-facility', 'MAIN', '--option', 'defaultAssigningAuthority=EPI');
    expect(added).toMatchObject({ name: 'epic-results', profile: 'epic', types: ['ORU', 'ORM'], ackTimeoutMs: 5000, filter: ['DiagnosticReport?category=LAB'], options: { receivingFacility: 'MAIN', defaultAssigningAuthority: 'EPI' } });
    expect(added.retry.initialDelayMs).toBe(500);
    const list = await cli('destination', 'list');
    expect(list.destinations.map((d: any) => d.name)).toEqual(['epic-results']);
    expect(list.destinations[0].counts).toEqual({ queued: 0, sending: 0, delivered: 0, dead: 0 });
    expect((await cli('destination', 'pause', 'epic-results')).paused).toBe(true);
    expect((await cli('destination', 'resume', 'epic-results')).paused).toBe(false);
    expect((await cli('outbound', 'list', '--destination', 'epic-results')).messages).toEqual([]);
  }, 60_000);
});
