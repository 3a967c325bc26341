/**
 * Several processes on one database: two servers deliver one destination's queue together without sending
 * any row twice and keeping per-patient order; a server stopped in the middle of a queue leaves the rest to
 * the next one; a row whose claimer died (lease expired) is taken over and resent with the same MSH-10.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { openDatabase } from '../../src/db/open.js';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer, type Received } from '../../tools/mllp-peer.js';
import { labReport, outboxStates, startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';

function perPatient(received: Received[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of received) {
    const mrn = r.msg.getSegment('PID')!.getField(3).getComponent(1);
    (out[mrn] ??= []).push(r.msg.getSegment('OBX')!.getField(5).toString());
  }
  return out;
}

describe.each(testDatabases())('outbound with several processes on $name', (tdb) => {
  let dbA: Database;
  let dbB: Database;
  let drop: () => Promise<void>;
  const cleanup: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    const opened = await tdb.open();
    dbA = opened.db;
    drop = opened.drop;
    // PostgreSQL: a second pool, as a second process would have. PGlite is one process's database by nature.
    dbB = opened.url ? await openDatabase({ databaseUrl: opened.url, dataDir: null }) : dbA;
  });
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    if (dbB !== dbA) await dbB.close();
    await drop?.();
  });

  async function destination(server: OutboundServer, name: string, peer: Peer) {
    const res = await server.admin('POST', '/destinations', {
      name,
      host: '127.0.0.1',
      port: peer.port,
      types: 'ORU',
      filter: `DiagnosticReport?category=urn:test:lane|${name}`,
      retry: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    expect(res.status).toBe(201);
  }

  it('two servers share one queue: every message once, per-patient order kept', async () => {
    const peer = await startPeer(() => ({ delayMs: 3, code: 'AA' }));
    cleanup.push(() => peer.close());
    const a = await startOutboundServer(dbA);
    cleanup.push(() => a.stop());
    const b = await startOutboundServer(dbB);
    cleanup.push(() => b.stop());
    await destination(a, 'shared', peer);
    await Promise.all([a.outbound.refresh(), b.outbound.refresh()]);
    const written: Record<string, string[]> = {};
    for (let i = 0; i < 30; i++) {
      const mrn = `TWO-${i % 5}`;
      await (i % 2 ? a : b).transaction(labReport(mrn, { category: 'shared', values: [i, 1000 + i] }));
      (written[mrn] ??= []).push(String(i));
    }
    await until(async () => (await outboxStates(dbA, 'shared')).delivered === 30 || undefined, '30 delivered');
    const workers = [a, b].map((s) => s.outbound.workers().find((w) => w.name === 'shared')!);
    // Servers of one test must not serve the next test's destinations.
    await a.stop();
    await b.stop();
    expect(await outboxStates(dbA, 'shared')).toEqual({ delivered: 30 });
    expect(peer.received).toHaveLength(30);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(30);
    expect(perPatient(peer.received)).toEqual(written);
    // Together the two processes delivered each row once.
    expect(workers[0]!.stats.delivered + workers[1]!.stats.delivered).toBe(30);
  });

  it('a destination added through one server is answered once the other files with it too: its next result is sent', async () => {
    const peer = await startPeer();
    cleanup.push(() => peer.close());
    // Refreshes 1.5 s apart: b's list is stale right after the add unless the add waited for b to reload it.
    const slow = { HL7_OUTBOUND_REFRESH_MS: '1500' };
    const a = await startOutboundServer(dbA, slow);
    cleanup.push(() => a.stop());
    const b = await startOutboundServer(dbB, slow);
    cleanup.push(() => b.stop());
    await b.transaction(labReport('LATE-0', { category: 'late' })); // b has read the destinations: none yet
    await destination(a, 'late', peer);
    await b.transaction(labReport('LATE-1', { category: 'late' }));
    await until(async () => (await outboxStates(dbA, 'late')).delivered === 1 || undefined, 'the result filed through b delivered');
    expect(peer.received.map((r) => r.msg.getSegment('PID')!.getField(3).getComponent(1))).toEqual(['LATE-1']);
    await a.stop();
    await b.stop();
  });

  it('a server stopped mid-queue: the next one delivers the rest, nothing lost, nothing twice', async () => {
    const peer = await startPeer(() => ({ delayMs: 25, code: 'AA' }));
    cleanup.push(() => peer.close());
    const first = await startOutboundServer(dbA);
    await destination(first, 'restart', peer);
    await first.outbound.refresh();
    const written: Record<string, string[]> = {};
    for (let i = 0; i < 20; i++) {
      const mrn = `RST-${i % 3}`;
      await first.transaction(labReport(mrn, { category: 'restart', values: [i, 2000 + i] }));
      (written[mrn] ??= []).push(String(i));
    }
    await peer.waitFor(4);
    await first.stop();
    const sentBefore = peer.received.length;
    const mid = await outboxStates(dbA, 'restart');
    expect(mid.sending ?? 0).toBe(0);
    expect(mid.queued ?? 0).toBeGreaterThan(0);
    const second = await startOutboundServer(dbB);
    cleanup.push(() => second.stop());
    await until(async () => (await outboxStates(dbA, 'restart')).delivered === 20 || undefined, '20 delivered after restart');
    expect(sentBefore).toBeLessThan(20);
    expect(peer.received).toHaveLength(20);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(20);
    expect(perPatient(peer.received)).toEqual(written);
    await second.stop();
  });

  it('a row left in sending by a dead process is taken over after its lease, with the same MSH-10', async () => {
    const peer = await startPeer();
    cleanup.push(() => peer.close());
    const server = await startOutboundServer(dbA);
    cleanup.push(() => server.stop());
    await destination(server, 'takeover', peer);
    await server.admin('POST', '/destinations/takeover/pause');
    await server.outbound.refresh();
    await server.transaction(labReport('TAKE-1', { category: 'takeover' }));
    // What a process that built and sent the message, then died before the ACK, leaves behind.
    await dbA.query(
      `UPDATE hl7_outbox SET state = 'sending', claim_token = 'dead-process', lease_until = now() - interval '1 second',
              payload = 'MSH|^~\\&|CONFLUX|CONFLUX|||20240101000000||ORU^R01|CFXDEAD1|P|2.5.1' || chr(13) || 'PID|1||TAKE-1', control_id = 'CFXDEAD1'
        WHERE destination = 'takeover'`,
    );
    await server.admin('POST', '/destinations/takeover/resume');
    await until(async () => (await outboxStates(dbA, 'takeover')).delivered === 1 || undefined, 'taken over');
    expect(peer.received).toHaveLength(1);
    expect(peer.received[0]!.controlId).toBe('CFXDEAD1');
  });
});
