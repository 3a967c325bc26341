/**
 * A patient merge, outbound: the prior record's results and orders that already went out are not sent again
 * under the survivor (receivers merge their own copies on the ADT^A40); the merge itself becomes an ADT^A40
 * (PID = survivor, MRG-1 = the prior record's identifiers) for destinations whose types include ADT.
 * Real server, real MLLP peers, real database (PGlite; PostgreSQL with TEST_DATABASE_URL).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Patient } from '@medplum/fhirtypes';
import { Hl7Message } from '@medplum/core';
import { makeLogger } from '../../src/facade.js';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { processPayload, type ProcessorDeps } from '../../facades/hl7v2/inbound/processor.js';
import { buildMergeMessage, MERGE_EVENT } from '../../facades/hl7v2/outbound/build-adt.js';
import { type Destination } from '../../facades/hl7v2/outbound/destinations.js';
import { dialectFor } from '../../facades/hl7v2/outbound/profiles.js';
import { activate, eventsFor, wants } from '../../facades/hl7v2/outbound/triggers.js';
import { testDatabases } from '../helpers/db.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';

const oru = (ctl: string, mrn: string) =>
  [
    `MSH|^~\\&|LIS|LAB|CONFLUX|HOSP|20240102030405||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
    `PID|1||${mrn}^^^HOSP^MR||Prior^Pat^Q||19700102|F`,
    `OBR|1|PL-${ctl}^EHR|FL-${ctl}^LAB|24326-1^Electrolytes panel^LN|||20240102010000||||||||||||||||20240102030000|||F`,
    'OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^mmol/L^UCUM|3.5-5.1||||F',
  ].join('\r');
const orm = (ctl: string, mrn: string) =>
  [
    `MSH|^~\\&|EHR|HOSP|CONFLUX|HOSP|20240103080000||ORM^O01|${ctl}|P|2.3`,
    `PID|1||${mrn}^^^HOSP^MR||Prior^Pat^Q||19700102|F`,
    `ORC|NW|ORD-${ctl}^EHR|||||^^^^^R||20240103075500`,
    `OBR|1|ORD-${ctl}^EHR||71045^XR chest 1 view^CPT`,
  ].join('\r');
const a04 = (ctl: string, mrn: string) =>
  [`MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240101080000||ADT^A04^ADT_A01|${ctl}|P|2.5`, 'EVN|A04|20240101080000', `PID|1||${mrn}^^^HOSP^MR||Survivor^Sue||19700102|F`, 'PV1|1|O'].join('\r');
const a40 = (ctl: string, survivor: string, prior: string) =>
  [`MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240106080000||ADT^A40^ADT_A39|${ctl}|P|2.5`, 'EVN|A40|20240106080000', `PID|1||${survivor}^^^HOSP^MR`, `MRG|${prior}^^^HOSP^MR`].join('\r');

describe.each(testDatabases())('patient merge outbound on $name', (tdb) => {
  let server: OutboundServer;
  let lab: Peer;
  let ris: Peer;
  let mpi: Peer;
  let deps: ProcessorDeps;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    server = await startOutboundServer(opened.db);
    [lab, ris, mpi] = await Promise.all([startPeer(), startPeer(), startPeer()]);
    expect((await server.admin('POST', '/destinations', { name: 'lab', host: '127.0.0.1', port: lab.port, profile: 'epic', types: 'ORU' })).status).toBe(201);
    expect((await server.admin('POST', '/destinations', { name: 'ris', host: '127.0.0.1', port: ris.port, profile: 'generic', types: 'ORM' })).status).toBe(201);
    const res = await server.admin('POST', '/destinations', { name: 'mpi', host: '127.0.0.1', port: mpi.port, profile: 'epic', types: 'ADT' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const rt = server.runtime;
    deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: { ...makeLogger('in'), info: () => undefined, warn: () => undefined } });
  });
  afterAll(async () => {
    await server?.stop();
    await Promise.all([lab?.close(), ris?.close(), mpi?.close()]);
    await drop?.();
  });

  const send = async (text: string) => {
    const r = await processPayload(deps, Buffer.from(text, 'utf8'));
    expect(r.replies[0]).toMatch(/MSA\|AA\|/);
  };
  const rows = async (destination: string) =>
    (await server.runtime.db.query<{ event: string; group_key: string }>('SELECT event, group_key FROM hl7_outbox WHERE destination = $1 ORDER BY id', [destination])).rows;
  const patientId = async (mrn: string) => {
    const r = await server.runtime.db.query<{ id: string }>(
      `SELECT id FROM resource WHERE resource_type = 'Patient' AND NOT deleted AND content::jsonb->'identifier' @> $1::jsonb`,
      [JSON.stringify([{ system: 'urn:conflux:hl7v2:aa:HOSP', value: mrn }])],
    );
    return r.rows[0]!.id;
  };

  it('moving the prior record’s sent results and orders sends no ORU or ORM again', async () => {
    await send(oru('MO-ORU-1', 'PRIOR-1'));
    await send(orm('MO-ORM-1', 'PRIOR-1'));
    await send(a04('MO-A04-1', 'SURV-1'));
    await lab.waitFor(1);
    await ris.waitFor(1);
    const [labRows, risRows] = [await rows('lab'), await rows('ris')];
    expect(labRows.map((r) => r.event)).toEqual(['ORU']);
    expect(risRows.map((r) => r.event)).toEqual(['ORM:NW']);

    await send(a40('MO-A40-1', 'SURV-1', 'PRIOR-1'));
    // The report, its result and the order now belong to the survivor, as new versions…
    const survivor = await patientId('SURV-1');
    const [type, id] = labRows[0]!.group_key.split('/') as [string, string];
    const report = await server.runtime.repo.read(type, id);
    expect(report.versionId).toBe(2);
    expect(JSON.parse(report.content!).subject.reference).toBe(`Patient/${survivor}`);
    // …and the hook, which ran inside that committed transaction, queued no resend of them.
    expect(await rows('lab')).toEqual(labRows);
    expect(await rows('ris')).toEqual(risRows);
  });

  it('the merge is an ADT^A40 event, built from the committed records in the destination’s dialect', async () => {
    const prior = await patientId('PRIOR-1');
    const survivor = await patientId('SURV-1');
    const repo = server.runtime.repo;
    const merged = await repo.readResource<Patient>('Patient', prior);
    const before = JSON.parse((await repo.vread('Patient', prior, String(Number(merged.meta!.versionId) - 1))).content!) as Patient;
    // The change the merge made to the prior record, as the outbox hook sees it.
    const events = await server.runtime.db.transaction((tx) =>
      eventsFor(tx, { method: 'PUT', resourceType: 'Patient', id: prior, versionId: Number(merged.meta!.versionId), resource: merged, previous: before }, new Set()),
    );
    expect(events).toEqual([{ event: MERGE_EVENT, family: 'adt', groupKey: `Patient/${prior}`, patientKey: `Patient/${prior}` }]);
    const dest = (types: string[]): Destination => ({ name: 'x', host: 'h', port: 1, profile: 'epic', types: types as Destination['types'], filter: [], ackTimeoutMs: 1000, retry: { maxAttempts: 0, initialDelayMs: 1, maxDelayMs: 1 }, options: {}, paused: false, source: 'api' });
    expect(wants(activate(dest(['ADT'])), events[0]!, merged)).toBe(true);
    expect(wants(activate(dest(['ORU', 'ORM'])), events[0]!, merged)).toBe(false);

    for (const profile of ['epic', 'generic'] as const) {
      const built = await buildMergeMessage(repo, { event: MERGE_EVENT, groupKey: `Patient/${prior}` }, dialectFor(profile), 'CFX900');
      expect(built.messageType).toBe('ADT^A40');
      // Parsed with @medplum/core's parser, not ours.
      const msg = Hl7Message.parse(built.text);
      expect(msg.getSegment('MSH')!.getField(9).toString()).toBe(profile === 'epic' ? 'ADT^A40' : 'ADT^A40^ADT_A39');
      expect(msg.getSegment('EVN')!.getField(1).toString()).toBe('A40');
      expect(msg.getSegment('PID')!.getField(3).toString()).toBe(profile === 'epic' ? 'SURV-1^^^HOSP^MRN' : 'SURV-1^^^HOSP^MR');
      expect(msg.getSegment('PID')!.getField(5).toString()).toBe('Survivor^Sue');
      expect(msg.getSegment('MRG')!.getField(1).toString()).toBe(profile === 'epic' ? 'PRIOR-1^^^HOSP^MRN' : 'PRIOR-1^^^HOSP^MR');
      expect(msg.getSegment('MRG')!.getField(7).toString()).toBe('Prior^Pat^Q');
    }
    expect(survivor).not.toBe(prior);
  });

  it('an ADT destination receives the A40: PID the survivor, MRG the prior record', async () => {
    await send(a04('MO-A04-2', 'SURV-2'));
    await send(oru('MO-ORU-2', 'PRIOR-2'));
    await lab.waitFor(2);
    await send(a40('MO-A40-2', 'SURV-2', 'PRIOR-2'));
    // The first test's merge sent its own A40 to this destination too: wait for this one.
    const got = await until(async () => mpi.received.find((r) => r.msg.getSegment('MRG')?.getField(1).getComponent(1) === 'PRIOR-2'), 'the A40 of PRIOR-2 at the peer');
    expect(got!.msg.getSegment('MSH')!.getField(9).toString()).toBe('ADT^A40');
    expect(got!.msg.getSegment('PID')!.getField(3).getComponent(1)).toBe('SURV-2');
    await until(async () => (await server.runtime.db.query<{ state: string }>(`SELECT state FROM hl7_outbox WHERE destination = 'mpi' AND group_key = $1`, [`Patient/${await patientId('PRIOR-2')}`])).rows[0]?.state === 'delivered', 'the A40 row delivered');
    // Only the ADT destination: results and orders go nowhere new.
    expect((await rows('lab')).filter((r) => r.event.startsWith('ADT'))).toEqual([]);
  });
});
