/**
 * Withdrawals: a result already sent that becomes entered-in-error / cancelled, or is deleted, goes out
 * again as an ORU taking it back (OBX-11 W/D/X, OBR-25 C/X), with the same placer/filler numbers, and only
 * to destinations that took it. Real MLLP peers on both databases.
 */
import type { Bundle } from '@medplum/fhirtypes';
import type { Hl7Message } from '@medplum/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { labReport, startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';

describe.each(testDatabases())('outbound withdrawals on $name', (tdb) => {
  let server: OutboundServer;
  let epic: Peer;
  let cerner: Peer;
  let other: Peer;
  let drop: () => Promise<void>;
  let db: Database;
  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    db = opened.db;
    server = await startOutboundServer(opened.db);
    [epic, cerner, other] = await Promise.all([startPeer(), startPeer(), startPeer()]);
    expect((await server.admin('POST', '/destinations', { name: 'epic', host: '127.0.0.1', port: epic.port, profile: 'epic', types: 'ORU' })).status).toBe(201);
    expect((await server.admin('POST', '/destinations', { name: 'cerner', host: '127.0.0.1', port: cerner.port, profile: 'cerner', types: 'ORU' })).status).toBe(201);
    // Takes only reports of another lane: it never gets these results, so it must never get their withdrawal.
    expect(
      (await server.admin('POST', '/destinations', { name: 'other', host: '127.0.0.1', port: other.port, profile: 'generic', types: 'ORU', filter: 'DiagnosticReport?category=urn:test:lane|other' })).status,
    ).toBe(201);
  });
  afterAll(async () => {
    await server?.stop();
    await Promise.all([epic?.close(), cerner?.close(), other?.close()]);
    await drop?.();
  });

  const fhir = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.fhir}/${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/fhir+json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    expect(res.status, await res.clone().text()).toBeLessThan(300);
    const text = await res.text();
    return text ? JSON.parse(text) : undefined;
  };
  const refs = (b: Bundle, type: string) => b.entry!.map((e) => e.response?.location?.match(new RegExp(`(${type}/[^/]+)`))?.[1]).filter((x): x is string => !!x);
  const filler = (m: Hl7Message) => m.getSegment('OBR')!.getField(3).getComponent(1);
  /** The messages a peer got for one report (by filler number), waiting until there are `n`. */
  const messagesFor = (peer: Peer, fill: string, n: number) =>
    until(() => {
      const got = peer.received.filter((r) => filler(r.msg) === fill).map((r) => r.msg);
      return Promise.resolve(got.length >= n ? got : undefined);
    }, `${n} message(s) for ${fill}`);
  const obx11 = (m: Hl7Message) => m.getAllSegments('OBX').map((o) => o.getField(11).toString());
  const obr25 = (m: Hl7Message) => m.getSegment('OBR')!.getField(25).toString();
  const fillerOf = (b: Bundle) => (b.entry!.find((e) => e.resource?.resourceType === 'DiagnosticReport')?.resource as any)?.identifier?.[0]?.value as string;
  const rowsFor = async (destination: string, groupKey: string) =>
    (await db.query<{ event: string; state: string }>('SELECT event, state FROM hl7_outbox WHERE destination = $1 AND group_key = $2 ORDER BY id', [destination, groupKey])).rows;

  it('a sent result becoming entered-in-error: OBX-11 W on that OBX, OBR-25 C, same placer/filler, to every destination that took it', async () => {
    const b = await server.transaction(labReport('WD-1'));
    const fill = fillerOf(b);
    const [firstEpic] = await messagesFor(epic, fill, 1);
    await messagesFor(cerner, fill, 1);
    const [obsRef] = refs(b, 'Observation');
    const obs = await fhir('GET', obsRef!);
    await fhir('PUT', obsRef!, { ...obs, status: 'entered-in-error' });
    for (const peer of [epic, cerner]) {
      const [orig, wd] = await messagesFor(peer, fill, 2);
      expect(wd!.getSegment('MSH')!.getField(9).toString()).toMatch(/^ORU\^R01/);
      expect(obx11(wd!)).toEqual(['W', 'F']);
      expect(obr25(wd!)).toBe('C');
      // The receiver finds the order by the same numbers it got in the original.
      expect(wd!.getSegment('OBR')!.getField(3).toString()).toBe(orig!.getSegment('OBR')!.getField(3).toString());
      expect(wd!.getSegment('OBR')!.getField(2).toString()).toBe(orig!.getSegment('OBR')!.getField(2).toString());
      expect(wd!.getSegment('ORC')!.getField(3).toString()).toBe(orig!.getSegment('ORC')!.getField(3).toString());
      expect(wd!.getSegment('PID')!.getField(3).getComponent(1)).toBe('WD-1');
    }
    expect(firstEpic!.getSegment('MSH')!.getField(12).toString()).toBe('2.3');
    const report = refs(b, 'DiagnosticReport')[0]!;
    // The peer has the message before the worker has recorded its ACK: wait for the row to settle.
    const settled = await until(async () => {
      const rows = await rowsFor('epic', report);
      return rows.every((r) => r.state === 'delivered') && rows;
    }, 'epic rows delivered');
    expect(settled).toEqual([
      { event: 'ORU', state: 'delivered' },
      { event: 'ORU:WITHDRAW', state: 'delivered' },
    ]);
    // The destination whose filter kept the report out never had it, so it is not told to delete it.
    expect(await rowsFor('other', report)).toEqual([]);
    expect(other.received.some((r) => filler(r.msg) === fill)).toBe(false);
  });

  it('a whole report entered-in-error: every OBX W; a cancelled report: OBR-25 X, its results D', async () => {
    const wrong = await server.transaction(labReport('WD-2'));
    const cancelled = await server.transaction(labReport('WD-2'));
    await messagesFor(cerner, fillerOf(wrong), 1);
    await messagesFor(cerner, fillerOf(cancelled), 1);
    const r1 = refs(wrong, 'DiagnosticReport')[0]!;
    const r2 = refs(cancelled, 'DiagnosticReport')[0]!;
    await fhir('PUT', r1, { ...(await fhir('GET', r1)), status: 'entered-in-error' });
    await fhir('PUT', r2, { ...(await fhir('GET', r2)), status: 'cancelled' });
    for (const peer of [epic, cerner]) {
      const [, w] = await messagesFor(peer, fillerOf(wrong), 2);
      expect(obx11(w!)).toEqual(['W', 'W']);
      expect(obr25(w!)).toBe('C');
      const [, x] = await messagesFor(peer, fillerOf(cancelled), 2);
      expect(obr25(x!)).toBe('X');
      expect(obx11(x!)).toEqual(['D', 'D']);
    }
  });

  it('DELETE of a sent report or result sends the withdrawal, built from the last version', async () => {
    const whole = await server.transaction(labReport('WD-3'));
    const one = await server.transaction(labReport('WD-3', { values: [3.9, 141] }));
    await messagesFor(epic, fillerOf(whole), 1);
    await messagesFor(epic, fillerOf(one), 1);
    await fhir('DELETE', refs(whole, 'DiagnosticReport')[0]!);
    await fhir('DELETE', refs(one, 'Observation')[1]!);
    const [, w] = await messagesFor(epic, fillerOf(whole), 2);
    expect(obx11(w!)).toEqual(['W', 'W']);
    expect(obr25(w!)).toBe('C');
    expect(w!.getSegment('OBX')!.getField(5).toString()).toBe('4.2');
    const [, o] = await messagesFor(epic, fillerOf(one), 2);
    // The deleted Sodium goes as W with its last value; Potassium stands.
    expect(obx11(o!)).toEqual(['F', 'W']);
    expect(o!.getAllSegments('OBX')[1]!.getField(5).toString()).toBe('141');
    expect(obr25(o!)).toBe('C');
  });

  it('a standalone result (no report) withdrawn: its own OBR, OBX-11 W', async () => {
    const patient = await fhir('POST', 'Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:conflux:hl7v2:aa:HOSP', value: 'WD-4' }] });
    const obs = await fhir('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '2345-7', display: 'Glucose' }] },
      subject: { reference: `Patient/${patient.id}` },
      valueQuantity: { value: 99, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
    });
    const forPatient = (peer: Peer, n: number) =>
      until(() => {
        const got = peer.received.filter((r) => r.msg.getSegment('PID')!.getField(3).getComponent(1) === 'WD-4').map((r) => r.msg);
        return Promise.resolve(got.length >= n ? got : undefined);
      }, `${n} message(s) for WD-4`);
    await forPatient(cerner, 1);
    await fhir('DELETE', `Observation/${obs.id}`);
    const [, wd] = await forPatient(cerner, 2);
    expect(obx11(wd!)).toEqual(['W']);
    expect(obr25(wd!)).toBe('C');
    expect(wd!.getSegment('OBR')!.getField(4).getComponent(1)).toBe('2345-7');
  });

  it('never sent → nothing: a deleted preliminary report a finals-only destination never took, and a final report deleted while its destination was paused', async () => {
    // Epic takes finals and corrections only here; Cerner takes every status (its profile's default).
    expect((await server.admin('PUT', '/destinations/epic', { statuses: 'final,corrected,amended' })).status).toBe(200);
    await server.outbound.refresh();
    const prelim = await server.transaction(labReport('WD-5', { status: 'preliminary' }));
    const prelimReport = refs(prelim, 'DiagnosticReport')[0]!;
    const [sentPrelim] = await messagesFor(cerner, fillerOf(prelim), 1);
    expect(obr25(sentPrelim!)).toBe('P');
    expect(obx11(sentPrelim!)).toEqual(['P', 'P']);
    await until(async () => (await rowsFor('cerner', prelimReport)).every((r) => r.state === 'delivered') || undefined, 'cerner took the preliminary report');
    await fhir('DELETE', prelimReport);
    await fhir('DELETE', refs(prelim, 'Observation')[0]!);
    // Cerner had it and is told to delete it; Epic and the filtered destination never had it: nothing for them.
    const [, wdPrelim] = await messagesFor(cerner, fillerOf(prelim), 2);
    expect(obx11(wdPrelim!)).toEqual(['W', 'W']);
    for (const d of ['epic', 'other']) expect(await rowsFor(d, prelimReport)).toEqual([]);
    expect((await server.admin('PUT', '/destinations/epic', { statuses: null })).status).toBe(200);

    expect((await server.admin('POST', '/destinations/epic/pause')).status).toBe(200);
    await server.outbound.refresh();
    const queued = await server.transaction(labReport('WD-5'));
    const report = refs(queued, 'DiagnosticReport')[0]!;
    await messagesFor(cerner, fillerOf(queued), 1);
    await fhir('DELETE', report);
    // Cerner took it and gets the withdrawal; Epic's row had not been built, so it is superseded, not sent.
    const [, wd] = await messagesFor(cerner, fillerOf(queued), 2);
    expect(obx11(wd!)).toEqual(['W', 'W']);
    expect(await rowsFor('epic', report)).toEqual([{ event: 'ORU', state: 'superseded' }]);
    expect((await server.admin('POST', '/destinations/epic/resume')).status).toBe(200);
    await server.outbound.refresh();
    // Same patient lane: once this later report arrives, anything for the deleted one would have come first.
    const barrier = await server.transaction(labReport('WD-5'));
    await messagesFor(epic, fillerOf(barrier), 1);
    expect(epic.received.some((r) => filler(r.msg) === fillerOf(queued) || filler(r.msg) === fillerOf(prelim))).toBe(false);
  });
});
