/**
 * Delivery against a real MLLP peer: AA, AE, AR, timeouts, dropped connections, a peer that is down for a
 * while, pause/resume, replay, per-patient order. Each test uses its own destination, selected by a
 * filter on DiagnosticReport.category, so the tests do not see each other's messages.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { listMessages } from '../../src/messages/message-log.js';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer, type PeerAction } from '../../tools/mllp-peer.js';
import { labReport, outboxStates, startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';

describe.each(testDatabases())('HL7 v2 outbound delivery on $name', (tdb) => {
  let server: OutboundServer;
  let db: Database;
  let drop: () => Promise<void>;
  const peers: Peer[] = [];

  beforeAll(async () => {
    const opened = await tdb.open();
    db = opened.db;
    drop = opened.drop;
    server = await startOutboundServer(db);
  });
  afterAll(async () => {
    await server?.stop();
    for (const p of peers) await p.close();
    await drop?.();
  });

  async function destination(name: string, answer: (i: number) => PeerAction = () => 'AA', extra: Record<string, unknown> = {}) {
    const peer = await startPeer((_m, i) => answer(i));
    peers.push(peer);
    const res = await server.admin('POST', '/destinations', {
      name,
      host: '127.0.0.1',
      port: peer.port,
      profile: 'generic',
      types: 'ORU',
      filter: [`DiagnosticReport?category=urn:test:lane|${name}`],
      ackTimeoutMs: 1000,
      retry: { initialDelayMs: 50, maxDelayMs: 200 },
      ...extra,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return peer;
  }
  const rows = async (name: string) => (await server.admin('GET', `/messages?destination=${name}&limit=1000`)).body.messages as any[];
  const settled = (name: string, n: number) =>
    until(async () => {
      const r = await rows(name);
      return r.length === n && r.every((m) => m.state === 'delivered' || m.state === 'dead') && r;
    }, `${n} settled rows for ${name}`);

  it('AA: delivered, with the sent bytes and the ACK kept and logged', async () => {
    const peer = await destination('aa');
    await server.transaction(labReport('AA-1', { category: 'aa' }));
    const [row] = await settled('aa', 1);
    expect(row.state).toBe('delivered');
    expect(row.attempts).toBe(1);
    expect(peer.received).toHaveLength(1);
    const full = (await server.admin('GET', `/messages/${row.id}`)).body;
    expect(full.payload).toBe(peer.received[0]!.text);
    expect(full.ack).toMatch(/MSA\|AA\|/);
    expect(full.ackCode).toBe('AA');
    expect(peer.received[0]!.controlId).toBe(full.controlId);
    const logged = await listMessages(db, { direction: 'out', controlId: full.controlId });
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ status: 'processed', receiver: 'aa', messageType: 'ORU^R01' });
    expect(logged[0]!.patientRefs[0]).toMatch(/^Patient\//);
  });

  it('AE: a dead letter at once, ACK kept, no resend', async () => {
    const peer = await destination('ae', () => 'AE');
    await server.transaction(labReport('AE-1', { category: 'ae' }));
    const [row] = await settled('ae', 1);
    expect(row).toMatchObject({ state: 'dead', ackCode: 'AE', attempts: 1 });
    expect(row.ack).toMatch(/MSA\|AE\|/);
    expect(row.lastError).toMatch(/^AE/);
    // The next message to this destination is sent after it: had the dead one been resent, the peer would have it twice.
    await server.transaction(labReport('AE-2', { category: 'ae' }));
    await settled('ae', 2);
    expect(peer.received).toHaveLength(2);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(2);
    const logged = await listMessages(db, { direction: 'out', controlId: row.controlId });
    expect(logged[0]).toMatchObject({ status: 'error' });
  });

  it('AR: a dead letter at once', async () => {
    const peer = await destination('ar', () => 'AR');
    await server.transaction(labReport('AR-1', { category: 'ar' }));
    const [row] = await settled('ar', 1);
    expect(row).toMatchObject({ state: 'dead', ackCode: 'AR', attempts: 1 });
    expect(peer.received).toHaveLength(1);
  });

  it('a late ACK times out and the same bytes (same MSH-10) are resent', async () => {
    // The first answer comes long after the timeout (so the outcome does not depend on machine load).
    const peer = await destination('slow', (i) => (i === 0 ? { delayMs: 20_000, code: 'AA' } : 'AA'), { ackTimeoutMs: 2000 });
    await server.transaction(labReport('SLOW-1', { category: 'slow' }));
    const [row] = await settled('slow', 1);
    expect(row).toMatchObject({ state: 'delivered', attempts: 2 });
    expect(peer.received).toHaveLength(2);
    expect(peer.received[1]!.text).toBe(peer.received[0]!.text);
    // The timed-out connection was dropped; the retry came on a new one.
    expect(peer.received[1]!.connection).toBe(peer.received[0]!.connection + 1);
  });

  it('a dropped connection is retried with backoff; connections are reused otherwise', async () => {
    const peer = await destination('flaky', (i) => (i === 1 ? 'drop' : 'AA'));
    for (let i = 0; i < 4; i++) await server.transaction(labReport(`FLAKY-${i}`, { category: 'flaky' }));
    const done = await settled('flaky', 4);
    expect(done.every((r) => r.state === 'delivered')).toBe(true);
    expect(done.map((r) => r.attempts).sort()).toEqual([1, 1, 1, 2]);
    // 5 messages on the wire (one resent), over 2 connections: one before the drop, one after.
    expect(peer.received).toHaveLength(5);
    expect(peer.connections).toBe(2);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(4);
  });

  it('a peer that is down queues; everything arrives once it is back, nothing twice', async () => {
    const peer = await destination('down');
    await peer.down();
    for (let i = 0; i < 5; i++) await server.transaction(labReport(`DOWN-${i}`, { category: 'down' }));
    await until(async () => (await rows('down')).some((r) => r.attempts >= 2) || undefined, 'retries while the peer is down');
    const during = await rows('down');
    expect(during.every((r) => r.state !== 'delivered')).toBe(true);
    expect(during.find((r) => r.attempts > 0).lastError).toMatch(/cannot connect|ECONNREFUSED/);
    await peer.up();
    const done = await settled('down', 5);
    expect(done.every((r) => r.state === 'delivered')).toBe(true);
    expect(peer.received).toHaveLength(5);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(5);
  });

  it('a paused destination queues and sends on resume', async () => {
    const peer = await destination('paused');
    expect((await server.admin('POST', '/destinations/paused/pause')).body.paused).toBe(true);
    await server.outbound.refresh();
    await server.transaction(labReport('PAUSE-1', { category: 'paused' }));
    // The workers keep running meanwhile: a message to another destination, written after it, is delivered…
    const other = await destination('beside-paused');
    await server.transaction(labReport('PAUSE-2', { category: 'beside-paused' }));
    await settled('beside-paused', 1);
    expect(other.received).toHaveLength(1);
    // …while the paused one, whose worker has looked at least twice since the write, has sent nothing.
    const worker = server.outbound.workers().find((w) => w.name === 'paused')!;
    const passes = worker.stats.passes;
    await until(() => worker.stats.passes >= passes + 2, 'two passes of the paused worker');
    expect(peer.received).toHaveLength(0);
    expect(await outboxStates(db, 'paused')).toEqual({ queued: 1 });
    expect((await server.admin('POST', '/destinations/paused/resume')).body.paused).toBe(false);
    const [row] = await settled('paused', 1);
    expect(row.state).toBe('delivered');
    expect(peer.received).toHaveLength(1);
  });

  it('replay of one dead letter and of all: new rows, new MSH-10, same content', async () => {
    let mode: PeerAction = 'AE';
    const peer = await destination('replay', () => mode);
    await server.transaction(labReport('REPLAY-1', { category: 'replay' }));
    await server.transaction(labReport('REPLAY-2', { category: 'replay' }));
    const dead = await settled('replay', 2);
    expect(dead.every((r) => r.state === 'dead')).toBe(true);
    mode = 'AA';
    const one = await server.admin('POST', `/messages/${dead[1].id}/replay`);
    expect(one.status).toBe(202);
    await peer.waitFor(3);
    const again = await server.admin('POST', '/messages/replay', { destination: 'replay' });
    expect(again.body.replayed).toBe(2);
    await peer.waitFor(5);
    const all = await settled('replay', 5);
    const replays = all.filter((r) => r.replayOf !== null);
    expect(replays).toHaveLength(3);
    expect(replays.every((r) => r.state === 'delivered')).toBe(true);
    const strip = (t: string) => t.split('\r').slice(1).join('\r');
    const original = peer.received[0]!;
    const replayed = peer.received.filter((r) => strip(r.text) === strip(original.text));
    expect(replayed.length).toBeGreaterThanOrEqual(2);
    expect(new Set(peer.received.map((r) => r.controlId)).size).toBe(5);
    // Replaying a queued or unknown row is refused clearly.
    expect((await server.admin('POST', '/messages/999999/replay')).status).toBe(404);
  });

  it('keeps per-patient order through failures', async () => {
    // Every third message is dropped: the lane waits for its head, other lanes go on.
    const peer = await destination('order', (i) => (i % 3 === 2 ? 'drop' : 'AA'));
    const patients = ['ORD-A', 'ORD-B', 'ORD-C'];
    const written: Record<string, string[]> = {};
    for (let i = 0; i < 12; i++) {
      const mrn = patients[i % 3]!;
      const entries = labReport(mrn, { category: 'order', values: [i, 100 + i] });
      await server.transaction(entries);
      (written[mrn] ??= []).push(String(i));
    }
    await settled('order', 12);
    const byPatient: Record<string, string[]> = {};
    const seen = new Set<string>();
    for (const r of peer.received) {
      if (r.action === 'drop' || seen.has(r.controlId)) continue;
      seen.add(r.controlId);
      const mrn = r.msg.getSegment('PID')!.getField(3).getComponent(1);
      const value = r.msg.getSegment('OBX')!.getField(5).toString();
      (byPatient[mrn] ??= []).push(value);
    }
    expect(byPatient).toEqual(written);
  });

  it('refuses bad destination settings with a message naming the setting', async () => {
    const bad = async (body: Record<string, unknown>) => {
      const res = await server.admin('POST', '/destinations', { name: 'x', host: 'h', port: 1, types: 'ORU', ...body });
      expect(res.status).toBe(400);
      return res.body.issue[0].diagnostics as string;
    };
    expect(await bad({ port: 70000 })).toMatch(/port must be an integer from 1 to 65535/);
    expect(await bad({ profile: 'meditech' })).toMatch(/profile must be one of epic, cerner, generic/);
    expect(await bad({ types: 'MDM' })).toMatch(/MDM not supported/);
    expect(await bad({ statuses: 'final,entered-in-error' })).toMatch(/unknown result status\(es\) entered-in-error/);
    expect(await bad({ filter: 'nonsense' })).toMatch(/filter "nonsense" must look like ResourceType\?param=value/);
    expect(await bad({ options: { colour: 'red' } })).toMatch(/unknown option\(s\) colour/);
    expect(await bad({ options: { timeZone: 'Mars/Olympus' } })).toMatch(/not an IANA time zone/);
    expect((await server.admin('POST', '/destinations/nope/pause')).status).toBe(404);
  });
});
