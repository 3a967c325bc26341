/** The operator commands, run as an operator would (`conflux destination add …`) against a running server. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { outboundOf, type OutboundHandle } from '../../facades/hl7v2/outbound/index.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { labReport } from './helpers.js';
import { until } from '../helpers/until.js';

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
  /** A command that must fail: exit code 1 and, with --json, {"error": ...} on stdout. */
  const failsWith = async (exitCode: number, args: string[]): Promise<string> => {
    try {
      await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args, '--json'], { env: { ...process.env, DATA_DIR: dir, AUTH: 'off' } });
    } catch (err) {
      const e = err as { code?: number; stdout?: string };
      expect(e.code).toBe(exitCode);
      return String(JSON.parse(e.stdout ?? '{}').error ?? e.stdout);
    }
    throw new Error(`conflux ${args.join(' ')} succeeded but should have failed`);
  };
  /** Refused by the server: exit code 1. */
  const cliFails = (...args: string[]) => failsWith(1, args);
  /** Wrong use of the command, found before any server is asked: exit code 2. */
  const usageFails = (...args: string[]) => failsWith(2, args);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'conflux-cli-'));
    peer = await startPeer();
    server = await startServer(await loadConfig({ AUTH: 'off', PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: dir, HL7_OUTBOUND_POLL_MS: '20' }));
    const rt = server.runtime;
    outbound = outboundOf(rt);
  }, 60_000);
  afterAll(async () => {
    await outbound?.stop();
    await server?.stop();
    await peer?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('adds, lists, pauses and resumes a destination', async () => {
    const added = await cli('destination', 'add', '--name', 'epic-results', '--host', '127.0.0.1', '--port', String(peer.port), '--profile', 'epic', '--types', 'ORU,ORM',
      '--ack-timeout', '5000', '--retry-initial-ms', '500', '--filter', 'DiagnosticReport?category=LAB', '--receiving-facility', 'MAIN', '--option', 'defaultAssigningAuthority=EPI', '--statuses', 'final,preliminary,corrected');
    expect(added).toMatchObject({ name: 'epic-results', profile: 'epic', types: ['ORU', 'ORM'], ackTimeoutMs: 5000, filter: ['DiagnosticReport?category=LAB'], options: { receivingFacility: 'MAIN', defaultAssigningAuthority: 'EPI' } });
    // In the order of RESULT_STATUSES, whatever order they were given in.
    expect(added.statuses).toEqual(['preliminary', 'final', 'corrected']);
    expect(await cliFails('destination', 'add', '--name', 'x', '--host', '127.0.0.1', '--port', '1', '--types', 'ORU', '--statuses', 'final,entered-in-error')).toMatch(/unknown result status\(es\) entered-in-error \(a withdrawal always goes/);
    expect(added.retry.initialDelayMs).toBe(500);
    const list = await cli('destination', 'list');
    expect(list.destinations.map((d: any) => d.name)).toEqual(['epic-results']);
    expect(list.destinations[0].counts).toEqual({ queued: 0, sending: 0, delivered: 0, dead: 0, superseded: 0 });
    expect((await cli('destination', 'pause', 'epic-results')).paused).toBe(true);
    expect((await cli('destination', 'resume', 'epic-results')).paused).toBe(false);
    expect((await cli('outbound', 'list', '--destination', 'epic-results')).messages).toEqual([]);
  }, 60_000);

  it('outbound replay needs <id> or --all, and --rebuild takes no value (the id after it stays the id)', async () => {
    peer.answer = () => 'AE';
    const res = await fetch(`${server.url}/fhir`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: labReport('CLI-1', { category: 'LAB' }) }),
    });
    expect(res.status).toBe(200);
    const dead = await until(async () => {
      const m = (await cli('outbound', 'list', '--destination', 'epic-results', '--state', 'dead')).messages as any[];
      return m.length === 1 && m[0];
    }, 'a dead message');
    peer.answer = () => 'AA';
    const total = async () => ((await cli('outbound', 'list', '--destination', 'epic-results')).messages as any[]).length;
    expect(await total()).toBe(1);

    // A bare replay used to resend every dead message.
    expect(await usageFails('outbound', 'replay')).toMatch(/needs a message id .*or --all/);
    expect(await usageFails('outbound', 'replay', '--destination', 'epic-results')).toMatch(/or --all/);
    expect(await usageFails('outbound', 'replay', String(dead.id), '--all')).toMatch(/either a message id or --all/);
    expect(await total()).toBe(1);

    // "--rebuild <id>": --rebuild is a switch, so <id> is the message id, not its value.
    const one = await cli('outbound', 'replay', '--rebuild', String(dead.id));
    expect(one.replayed).toEqual([{ of: dead.id, id: expect.any(Number) }]);
    const rebuilt = await until(async () => {
      const r = await cli('outbound', 'show', String(one.replayed[0].id));
      return r.state === 'delivered' && r;
    }, 'the rebuilt replay delivered');
    expect(rebuilt.replayOf).toBe(dead.id);

    const all = await cli('outbound', 'replay', '--all', '--destination', 'epic-results');
    expect(all.replayed).toBe(1);
    expect(await total()).toBe(3);
  }, 60_000);
});
