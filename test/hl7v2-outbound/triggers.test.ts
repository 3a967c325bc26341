/** Which writes send what: orders (NW, CA), procedure-step completion (SC), corrections, standalone results, filters. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { labReport, outboxStates, startOutboundServer, type OutboundServer } from './helpers.js';

describe.each(testDatabases())('outbound triggers on $name', (tdb) => {
  let server: OutboundServer;
  let orders: Peer;
  let results: Peer;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    server = await startOutboundServer(opened.db);
    orders = await startPeer();
    results = await startPeer();
    expect((await server.admin('POST', '/destinations', { name: 'ris', host: '127.0.0.1', port: orders.port, profile: 'generic', types: 'ORM' })).status).toBe(201);
    expect((await server.admin('POST', '/destinations', { name: 'ehr', host: '127.0.0.1', port: results.port, profile: 'epic', types: 'ORU', filter: 'DiagnosticReport?category=urn:test:lane|ehr' })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.stop();
    await orders?.close();
    await results?.close();
    await drop?.();
  });

  const outboxRows = async (destination: string) => Object.values(await outboxStates(server.runtime.db, destination)).reduce((a, b) => a + b, 0);
  const put = async (resource: any) => {
    const res = await fetch(`${server.fhir}/${resource.resourceType}${resource.id ? `/${resource.id}` : ''}`, {
      method: resource.id ? 'PUT' : 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(resource),
    });
    expect(res.status, await res.clone().text()).toBeLessThan(300);
    return (await res.json()) as any;
  };

  it('a ServiceRequest: NW when created, CA when revoked, SC when its procedure step completes', async () => {
    const patient = await put({ resourceType: 'Patient', identifier: [{ system: 'urn:conflux:hl7v2:aa:HOSP', value: 'ORD-1' }] });
    const sr = await put({
      resourceType: 'ServiceRequest',
      status: 'active',
      intent: 'order',
      identifier: [{ system: 'urn:conflux:hl7v2:aa:EHR', value: 'P1', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'PLAC' }] } }],
      code: { coding: [{ system: 'http://loinc.org', code: '36643-5' }] },
      subject: { reference: `Patient/${patient.id}` },
    });
    await orders.waitFor(1);
    await put({ resourceType: 'Procedure', status: 'completed', basedOn: [{ reference: `ServiceRequest/${sr.id}` }], subject: { reference: `Patient/${patient.id}` }, performedDateTime: '2024-03-05T10:00:00Z' });
    await orders.waitFor(2);
    await put({ ...sr, status: 'revoked' });
    await orders.waitFor(3);
    const controls = orders.received.map((r) => [r.msg.getSegment('ORC')!.getField(1).toString(), r.msg.getSegment('ORC')!.getField(5).toString(), r.msg.getSegment('ORC')!.getField(2).getComponent(1)]);
    expect(controls).toEqual([
      ['NW', 'IP', 'P1'],
      ['SC', 'CM', 'P1'],
      ['CA', 'CA', 'P1'],
    ]);
    expect(orders.received.every((r) => r.msg.getSegment('PID')!.getField(3).getComponent(1) === 'ORD-1')).toBe(true);
    // The ORU-only destination got none of it: nothing was queued for it (queuing is part of each write's
    // transaction, so once the writes have answered this is final), hence nothing can reach its peer.
    expect(await outboxRows('ehr')).toBe(0);
    expect(results.received).toHaveLength(0);
  });

  it('a corrected result resends the whole report; an unchanged rewrite sends nothing', async () => {
    const bundle = await server.transaction(labReport('COR-1', { category: 'ehr' }));
    await results.waitFor(1);
    const obsRef = bundle.entry!.map((e) => /(Observation\/[^/]+)/.exec(e.response?.location ?? '')?.[1]).find(Boolean)!;
    const obs = await (await fetch(`${server.fhir}/${obsRef}`)).json();
    await put({ ...obs, status: 'corrected', valueQuantity: { ...obs.valueQuantity, value: 4.9 } });
    await results.waitFor(2);
    const second = results.received[1]!.msg;
    expect(second.getAllSegments('OBX')).toHaveLength(2);
    expect(second.getAllSegments('OBX').map((o) => o.getField(11).toString())).toEqual(['C', 'F']);
    expect(second.getSegment('OBX')!.getField(5).toString()).toBe('4.9');
    // Epic dialect on the wire.
    expect(second.getSegment('MSH')!.getField(12).toString()).toBe('2.3');
    const again = await (await fetch(`${server.fhir}/${obsRef}`)).json();
    // Outbox rows are written in the write's own transaction: once the PUT has answered, what it queued is there.
    // (Rows are counted whatever their state: the worker may still be marking the previous one delivered.)
    const queued = await outboxRows('ehr');
    await put({ ...again, meta: undefined });
    expect(await outboxRows('ehr')).toBe(queued);
    expect(results.received).toHaveLength(2);
  });

  it('the filter decides: a report outside it is not sent', async () => {
    const before = await outboxRows('ehr');
    await server.transaction(labReport('FLT-1', { category: 'elsewhere' }));
    // Nothing queued for it (queuing happens in the write's transaction), and a report inside the filter written
    // after it is the next thing the receiver gets.
    expect(await outboxRows('ehr')).toBe(before);
    const n = results.received.length;
    await server.transaction(labReport('FLT-2', { category: 'ehr' }));
    await results.waitFor(n + 1);
    expect(results.received.map((r) => r.msg.getSegment('PID')!.getField(3).getComponent(1))).not.toContain('FLT-1');
  });
});
