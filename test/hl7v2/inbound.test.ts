/**
 * End to end over a real MLLP socket into the real repository: field-by-field mapping, duplicates,
 * AR/AE, a crash between receive and commit, device readings held without an association, replay.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiagnosticReport, Observation, Patient, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { replayMessage } from '../../facades/hl7v2/inbound/processor.js';
import { startMllpListener } from '../../facades/hl7v2/inbound/listener.js';
import { getMessage, listMessages } from '../../src/messages/message-log.js';
import { DB_KINDS } from './test-db.js';
import { MllpClient, startHarness, type Harness } from './harness.js';

const ORU = (id: string, obx5 = '13.5', status = 'F') =>
  [
    `MSH|^~\\&|LIS|GOODLAB|CONFLUX|HOSP|20240102030405+0100||ORU^R01^ORU_R01|${id}|P|2.5.1`,
    'PID|1||MRN123^^^HOSP^MR~998877^^^SSA^SS||Doe^Jane^Q^^Dr||19800214|F|||1 Main St^^Springfield^IL^62701||555-1234',
    'PV1|1|I|4E^408^1||||1234^Welby^Marcus',
    'ORC|RE|PLC-1^EHR|FIL-1^LAB',
    'OBR|1|PLC-1^EHR|FIL-1^LAB|24331-1^Lipid panel^LN|||20240102010000+0100||||||||SER&Serum&HL70487|||||||20240102030000+0100|||F',
    `OBX|1|NM|2093-3^Cholesterol^LN||${obx5}|mg/dL^mg/dL^UCUM|100-200|H|||${status}|||20240102020000+0100||77^Tech^Tina`,
    'NTE|1||Fasting \\T\\ rested\\.br\\second line',
    'OBX|2|SN|2085-9^HDL^LN||>^60|mg/dL|40-60||||F',
    'OBX|3|SN|13457-7^LDL range^LN||^100^-^129|mg/dL',
    'OBX|4|CWE|883-9^ABO group^LN||A^Group A^L||||||F',
    'OBX|5|ST|8251-1^Comment^LN||Free text with \\F\\ pipe and \\S\\ caret||||||F',
    'OBX|6|DT|11778-8^Due date^LN||20240301||||||F',
    'ZXY|custom|stuff',
  ].join('\r');

async function resources(h: Harness, messageId: string): Promise<Resource[]> {
  const m = await getMessage(h.rt.db, messageId);
  const out: Resource[] = [];
  for (const ref of m!.resourceRefs) {
    const [type, id] = ref.split('/');
    const v = await h.rt.repo.read(type!, id!);
    out.push(JSON.parse(v.content!) as Resource);
  }
  return out;
}
async function count(h: Harness, type: string): Promise<number> {
  const r = await h.rt.db.query<{ n: number }>('SELECT count(*)::int AS n FROM resource WHERE resource_type = $1 AND NOT deleted', [type]);
  return r.rows[0]!.n;
}
const ackOf = (s: string) => Hl7v2Message.parse(s);

describe.each(DB_KINDS)('HL7 v2 inbound (%s)', (kind) => {
  let h: Harness;
  let c: MllpClient;
  let crashOnce = false;
  beforeAll(async () => {
    h = await startHarness(kind, (d) => {
      d.beforeCommit = async () => {
        if (crashOnce) {
          crashOnce = false;
          // The server goes away with the transaction still open: connections drop, nothing commits.
          await h.listener.close();
          throw new Error('simulated crash before commit');
        }
      };
    });
    c = await MllpClient.connect(h.listener.port);
  }, 60_000);
  afterAll(async () => {
    c?.end();
    await h?.close();
  });

  it('maps a lab ORU^R01 field by field and answers AA only after commit', async () => {
    const ack = ackOf(await c.request(ORU('ORU-1')));
    expect(ack.first('MSA')!.get(1)).toBe('AA');
    expect(ack.first('MSA')!.get(2)).toBe('ORU-1');
    expect(ack.msh.get(3)).toBe('CONFLUX');
    expect(ack.msh.get(5)).toBe('LIS');
    expect(ack.msh.get(9, 1)).toBe('ACK');
    const [log] = await listMessages(h.rt.db, { controlId: 'ORU-1' });
    expect(log!.status).toBe('processed');
    expect(log!.ack).toContain('MSA|AA|ORU-1');
    const res = await resources(h, log!.id);
    const patient = res.find((r) => r.resourceType === 'Patient') as Patient;
    expect(patient.identifier).toEqual([
      { system: 'urn:conflux:hl7v2:aa:HOSP', value: 'MRN123', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] } },
      { system: 'urn:conflux:hl7v2:aa:SSA', value: '998877', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS' }] } },
    ]);
    expect(patient.name).toEqual([{ family: 'Doe', given: ['Jane', 'Q'], prefix: ['Dr'] }]);
    expect(patient.birthDate).toBe('1980-02-14');
    expect(patient.gender).toBe('female');
    expect(patient.address).toEqual([{ line: ['1 Main St'], city: 'Springfield', state: 'IL', postalCode: '62701' }]);
    expect(log!.patientRefs).toEqual([`Patient/${patient.id}`]);

    const report = res.find((r) => r.resourceType === 'DiagnosticReport') as DiagnosticReport;
    expect(report.status).toBe('final');
    expect(report.code.coding![0]).toEqual({ system: 'http://loinc.org', code: '24331-1', display: 'Lipid panel' });
    expect(report.subject!.reference).toBe(`Patient/${patient.id}`);
    expect(report.effectiveDateTime).toBe('2024-01-02T01:00:00+01:00');
    expect(report.identifier![0]).toMatchObject({ system: 'urn:conflux:hl7v2:aa:LAB', value: 'FIL-1' });
    expect(report.result).toHaveLength(6);

    const obs = res.filter((r) => r.resourceType === 'Observation') as Observation[];
    const byCode = (c: string) => obs.find((o) => o.code.coding?.[0]?.code === c)!;
    const chol = byCode('2093-3');
    expect(chol.valueQuantity).toEqual({ value: 13.5, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' });
    expect(chol.referenceRange![0]).toMatchObject({ low: { value: 100 }, high: { value: 200 } });
    expect(chol.interpretation![0]!.coding![0]!.code).toBe('H');
    expect(chol.status).toBe('final');
    expect(chol.effectiveDateTime).toBe('2024-01-02T02:00:00+01:00');
    expect(chol.performer![0]).toMatchObject({ display: 'Tina Tech' });
    expect(chol.note).toEqual([{ text: 'Fasting & rested\nsecond line' }]);
    expect(chol.specimen?.reference).toMatch(/^Specimen\//);
    expect(byCode('2085-9').valueQuantity).toMatchObject({ value: 60, comparator: '>', code: 'mg/dL' });
    expect(byCode('13457-7').valueRange).toMatchObject({ low: { value: 100 }, high: { value: 129 } });
    expect(byCode('883-9').valueCodeableConcept!.coding![0]).toMatchObject({ code: 'A', display: 'Group A' });
    expect(byCode('8251-1').valueString).toBe('Free text with | pipe and ^ caret');
    expect(byCode('11778-8').valueDateTime).toBe('2024-03-01');
    // The Z-segment stays in the raw log.
    expect((await getMessage(h.rt.db, log!.id))!.raw.toString()).toContain('ZXY|custom|stuff');
  });

  it('answers a resend (same sender + MSH-10) AA and stores nothing new; a corrected result updates the same Observation', async () => {
    const before = await count(h, 'Observation');
    const ack = ackOf(await c.request(ORU('ORU-1')));
    expect(ack.first('MSA')!.get(1)).toBe('AA');
    expect(await count(h, 'Observation')).toBe(before);
    expect((await listMessages(h.rt.db, { controlId: 'ORU-1' }))[0]!.attempts).toBe(2);
    // A new message (new MSH-10) correcting OBX-1: same filler order + OBX-3 + OBX-4 → same Observation, new version.
    expect(ackOf(await c.request(ORU('ORU-2', '14.1', 'C'))).first('MSA')!.get(1)).toBe('AA');
    expect(await count(h, 'Observation')).toBe(before);
    expect(await count(h, 'Patient')).toBe(1);
    const [log] = await listMessages(h.rt.db, { controlId: 'ORU-2' });
    const chol = (await resources(h, log!.id)).find((r) => r.resourceType === 'Observation' && r.code.coding?.[0]?.code === '2093-3') as Observation;
    expect(chol.status).toBe('corrected');
    expect(chol.valueQuantity!.value).toBe(14.1);
    expect(chol.meta!.versionId).toBe('2');
  });

  it('AE with ERR naming the field for data errors; AR for unsupported type, version and processing id', async () => {
    const noPid3 = ORU('AE-1').replace('PID|1||MRN123^^^HOSP^MR~998877^^^SSA^SS|', 'PID|1|||');
    let ack = ackOf(await c.request(noPid3));
    expect(ack.first('MSA')!.get(1)).toBe('AE');
    expect(ack.first('ERR')!.raw(2)).toBe('PID^1^3');
    expect(ack.first('ERR')!.get(3, 1)).toBe('101');
    expect(ack.first('ERR')!.get(8)).toMatch(/PID-3/);
    ack = ackOf(await c.request(ORU('AE-2').replace('20240102020000+0100', '2024-01-02')));
    expect(ack.first('MSA')!.get(1)).toBe('AE');
    expect(ack.first('ERR')!.raw(2)).toBe('OBX^1^14');
    expect(ack.first('ERR')!.get(3, 1)).toBe('102');
    ack = ackOf(await c.request(ORU('AE-3', 'twelve')));
    expect(ack.first('ERR')!.get(8)).toBe("OBX-5 'twelve' is not a number but OBX-2 says NM");
    ack = ackOf(await c.request(ORU('AR-1').replace('ORU^R01^ORU_R01', 'SIU^S12^SIU_S12')));
    expect([ack.first('MSA')!.get(1), ack.first('ERR')!.get(3, 1)]).toEqual(['AR', '200']);
    ack = ackOf(await c.request(ORU('AR-2').replace('|P|2.5.1', '|P|3.0')));
    expect([ack.first('MSA')!.get(1), ack.first('ERR')!.get(3, 1)]).toEqual(['AR', '203']);
    ack = ackOf(await c.request(ORU('AR-3').replace('|P|2.5.1', '|X|2.5.1')));
    expect([ack.first('MSA')!.get(1), ack.first('ERR')!.get(3, 1)]).toEqual(['AR', '202']);
    const errors = await listMessages(h.rt.db, { status: 'error' });
    expect(errors.map((m) => m.controlId)).toEqual(expect.arrayContaining(['AE-1', 'AE-2', 'AE-3', 'AR-1', 'AR-2', 'AR-3']));
  });

  it('enhanced mode: MSH-15 AL / MSH-16 NE gets one commit ACK (CA)', async () => {
    const msg = ORU('ENH-1').replace('|P|2.5.1', '|P|2.5.1|||AL|NE');
    const ack = ackOf(await c.request(msg));
    expect(ack.first('MSA')!.get(1)).toBe('CA');
  });

  it('a crash between receive and commit sends no ACK; the resend lands exactly once', async () => {
    const before = await count(h, 'Observation');
    crashOnce = true;
    const msg = ORU('CRASH-1').replace(/FIL-1/g, 'FIL-9');
    const victim = await MllpClient.connect(h.listener.port);
    victim.send(msg);
    // The connection closes without any ACK, and nothing was stored.
    expect(await victim.waitFrames(1)).toEqual([]);
    expect(victim.closed).toBe(true);
    expect(await count(h, 'Observation')).toBe(before);
    // The server comes back; the sender reconnects and resends.
    h.listener = await startMllpListener(h.deps, { port: 0, host: '127.0.0.1' });
    c = await MllpClient.connect(h.listener.port);
    expect(ackOf(await c.request(msg)).first('MSA')!.get(1)).toBe('AA');
    expect(await count(h, 'Observation')).toBe(before + 6);
    expect(ackOf(await c.request(msg)).first('MSA')!.get(1)).toBe('AA');
    expect(await count(h, 'Observation')).toBe(before + 6);
    const logs = await listMessages(h.rt.db, { controlId: 'CRASH-1' });
    expect(logs).toHaveLength(1);
    expect(logs[0]!.status).toBe('processed');
    expect(logs[0]!.attempts).toBe(3);
  });

  it('the process dying mid-message leaves no ACK and no data; the resend on a new connection lands once', async () => {
    const before = await count(h, 'Observation');
    const msg = ORU('DIE-1').replace(/FIL-1/g, 'FIL-10');
    // A connection that drops before the frame ends: nothing is processed, nothing acknowledged.
    const c2 = await MllpClient.connect(h.listener.port);
    c2.writeRaw(Buffer.concat([Buffer.from([0x0b]), Buffer.from(msg.slice(0, 200))]));
    c2.socket.destroy();
    expect(await count(h, 'Observation')).toBe(before);
    expect(ackOf(await c.request(msg)).first('MSA')!.get(1)).toBe('AA');
    expect(await count(h, 'Observation')).toBe(before + 6);
  });

  it('ADT A01 upserts Patient and Encounter; A40 merges (survivor keeps data, merged gets replaced-by, inactive)', async () => {
    const a01 = (id: string, mrn: string, visit: string, name: string) =>
      [
        `MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240105080000||ADT^A01^ADT_A01|${id}|P|2.5`,
        'EVN|A01|20240105080000',
        `PID|1||${mrn}^^^HOSP^MR||${name}^John||19700101|M`,
        `PV1|1|I|4E^408^1||||1234^Welby^Marcus||||||||||||${visit}^^^HOSP^VN|||||||||||||||||||||||||20240105070000`,
      ].join('\r');
    expect(ackOf(await c.request(a01('ADT-1', 'M1', 'V1', 'Smith'))).first('MSA')!.get(1)).toBe('AA');
    expect(ackOf(await c.request(a01('ADT-2', 'M2', 'V2', 'Smyth'))).first('MSA')!.get(1)).toBe('AA');
    const [log] = await listMessages(h.rt.db, { controlId: 'ADT-1' });
    const res = await resources(h, log!.id);
    const enc = res.find((r) => r.resourceType === 'Encounter')!;
    expect(enc).toMatchObject({ status: 'in-progress', class: { code: 'IMP' }, period: { start: '2024-01-05T07:00:00Z' }, location: [{ location: { display: '4E 408 1' } }] });
    const survivorId = res.find((r) => r.resourceType === 'Patient')!.id;
    const a40 = [
      'MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240106080000||ADT^A40^ADT_A39|ADT-3|P|2.5',
      'EVN|A40|20240106080000',
      'PID|1||M1^^^HOSP^MR||Smith^John||19700101|M',
      'MRG|M2^^^HOSP^MR',
    ].join('\r');
    expect(ackOf(await c.request(a40)).first('MSA')!.get(1)).toBe('AA');
    const merged = await resources(h, (await listMessages(h.rt.db, { controlId: 'ADT-3' }))[0]!.id);
    const survivor = merged.find((r) => r.resourceType === 'Patient' && r.id === survivorId) as Patient;
    const gone = merged.find((r) => r.resourceType === 'Patient' && r.id !== survivorId) as Patient;
    expect(survivor.name![0]!.family).toBe('Smith');
    expect(survivor.link).toEqual([{ other: { reference: `Patient/${gone.id}` }, type: 'replaces' }]);
    expect(gone.active).toBe(false);
    expect(gone.link).toEqual([{ other: { reference: `Patient/${survivorId}` }, type: 'replaced-by' }]);
  });

  it('ORM^O01 NW creates a ServiceRequest by placer number; CA revokes the same one', async () => {
    const orm = (id: string, ctl: string) =>
      [
        `MSH|^~\\&|EHR|HOSP|CONFLUX|HOSP|20240107080000||ORM^O01|${id}|P|2.3`,
        'PID|1||M7^^^HOSP^MR||Lee^Ann||19900101|F',
        'DG1|1||R07.9^Chest pain^I10',
        `ORC|${ctl}|ORD-7^EHR|ACC-7^RIS||||^^^^^S||20240107075500|||999^Ordering^Olga`,
        'OBR|1|ORD-7^EHR|ACC-7^RIS|71045^XR chest 1 view^CPT||||||||||||||ACSN-77',
      ].join('\r');
    expect(ackOf(await c.request(orm('ORM-1', 'NW'))).first('MSA')!.get(1)).toBe('AA');
    const sr = (await resources(h, (await listMessages(h.rt.db, { controlId: 'ORM-1' }))[0]!.id)).find((r) => r.resourceType === 'ServiceRequest') as ServiceRequest;
    expect(sr).toMatchObject({
      status: 'active',
      intent: 'order',
      priority: 'stat',
      code: { coding: [{ system: 'http://www.ama-assn.org/go/cpt', code: '71045' }] },
      requester: { display: 'Olga Ordering' },
      authoredOn: '2024-01-07T07:55:00Z',
      reasonCode: [{ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'R07.9' }] }],
    });
    expect(sr.identifier!.map((i) => i.value)).toEqual(['ORD-7', 'ACC-7', 'ACSN-77']);
    expect(ackOf(await c.request(orm('ORM-2', 'CA'))).first('MSA')!.get(1)).toBe('AA');
    const sr2 = (await resources(h, (await listMessages(h.rt.db, { controlId: 'ORM-2' }))[0]!.id)).find((r) => r.resourceType === 'ServiceRequest') as ServiceRequest;
    expect(sr2.id).toBe(sr.id);
    expect(sr2.status).toBe('revoked');
  });

  it('a PCD-01 reading without a patient identifier is held, never guessed; replay re-runs a message', async () => {
    const pcd = [
      'MSH|^~\\&|GW^0012330000000001^EUI-64|ICU|CONFLUX|HOSP|20240108101500+0000||ORU^R01^ORU_R01|PCD-1|P|2.6|||AL|NE||8859/1|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO',
      'PID|||',
      'PV1||I|ICU^Bed7^1',
      'OBR|1||PCD-ORD-1^GW|69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC|||20240108101500+0000',
      'OBX|1||69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||ABCDEF0123456789^^ABCDEF0123456789^EUI-64',
      'OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.1.1|97|262688^MDC_DIM_PERCENT^MDC|90-100||||R|||20240108101400+0000',
    ].join('\r');
    const ack = ackOf(await c.request(pcd));
    expect(ack.first('MSA')!.get(1)).toBe('CA');
    const [log] = await listMessages(h.rt.db, { controlId: 'PCD-1' });
    expect(log!.status).toBe('held');
    expect(log!.resourceRefs).toEqual([]);
    expect(await count(h, 'Device')).toBe(0);
    // Replay produces a new log entry pointing at the original, held again for the same reason.
    const replay = await replayMessage(h.deps, log!.id);
    expect(replay.status).toBe('held');
    const again = await getMessage(h.rt.db, replay.id!);
    expect(again!.replayOf).toBe(log!.id);
  });

  it('maps a PCD-01 reading with a patient identifier: MDC + LOINC vital sign, Device from OBX-18', async () => {
    const pcd = [
      'MSH|^~\\&|GW|ICU|CONFLUX|HOSP|20240108101500+0000||ORU^R01^ORU_R01|PCD-2|P|2.6',
      'PID|||P55^^^HOSP^MR||Vital^Val',
      'OBR|1||PCD-ORD-2^GW|69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC|||20240108101500+0000',
      'OBX|1||69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||ABCDEF0123456789^^ABCDEF0123456789^EUI-64',
      'OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.1.1|97|262688^MDC_DIM_PERCENT^MDC|90-100||||R|||20240108101400+0000',
    ].join('\r');
    expect(ackOf(await c.request(pcd)).first('MSA')!.get(1)).toBe('AA');
    const res = await resources(h, (await listMessages(h.rt.db, { controlId: 'PCD-2' }))[0]!.id);
    const obs = res.find((r) => r.resourceType === 'Observation') as Observation;
    expect(obs.code.coding).toEqual([
      { system: 'urn:iso:std:iso:11073:10101', code: '150456', display: 'MDC_PULS_OXIM_SAT_O2' },
      { system: 'http://loinc.org', code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry' },
    ]);
    expect(obs.category![0]!.coding![0]!.code).toBe('vital-signs');
    // UCUM for FHIR readers, and the MDC unit as received (R4 iso21090-PQ-translation) for the way out.
    expect(obs.valueQuantity).toEqual({
      value: 97,
      unit: '%',
      system: 'http://unitsofmeasure.org',
      code: '%',
      extension: [
        {
          url: 'http://hl7.org/fhir/StructureDefinition/iso21090-PQ-translation',
          valueQuantity: { value: 97, unit: 'MDC_DIM_PERCENT', system: 'urn:iso:std:iso:11073:10101', code: '262688' },
        },
      ],
    });
    const dev = res.find((r) => r.resourceType === 'Device')!;
    expect(dev).toMatchObject({ identifier: [{ system: 'urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680', value: 'ABCDEF0123456789' }] });
    expect(obs.device!.reference).toBe(`Device/${dev.id}`);
  });

  it('answers a batch (BHS…BTS) with a batch of ACKs; a broken batch with AE naming the defect', async () => {
    const m = (id: string) => ORU(id).replace(/FIL-1/g, `FIL-${id}`);
    const batch = ['BHS|^~\\&|LIS|GOODLAB|CONFLUX|HOSP|20240102', m('B-1'), m('B-2'), 'BTS|2'].join('\r');
    const reply = await c.request(batch);
    const lines = reply.split('\r');
    expect(lines[0]).toMatch(/^BHS\|\^~\\&\|CONFLUX\|HOSP\|LIS\|GOODLAB\|/);
    expect(lines.filter((l) => l.startsWith('MSA'))).toEqual(['MSA|AA|B-1', 'MSA|AA|B-2']);
    expect(lines.at(-1)).toBe('BTS|2');
    const broken = ['BHS|^~\\&|LIS|GOODLAB|CONFLUX|HOSP|20240102', m('B-3'), 'BTS|5'].join('\r');
    const bad = ackOf(await c.request(broken));
    expect(bad.first('MSA')!.get(1)).toBe('AE');
    expect(bad.first('ERR')!.get(8)).toBe('BTS-1 declares 5 messages but the batch holds 1');
  });
});
