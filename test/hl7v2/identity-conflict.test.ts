/**
 * Results never change patient (issue 20, docs/design.md principle 5): an order number that already belongs to another
 * patient's report or order refuses the message (AE + ERR naming the field and the other patient's identifier),
 * holds it for review and changes nothing; an operator files it as new or rejects it through the admin API, audited.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent, Bundle, DiagnosticReport, Observation, ServiceRequest } from '@medplum/fhirtypes';
import { getMessage, registerHeldFiling, searchIds } from '../../src/index.js';
import { messageAdminRoutes } from '../../facades/hl7v2/inbound/admin-routes.js';
import { fileHeldAsNew } from '../../facades/hl7v2/inbound/processor.js';
import { DB_KINDS } from './test-db.js';
import { errText, msa, MllpClient, segments, startHarness, type Harness } from './harness.js';

let seq = 0;
function oru(opts: { mrn: string; name: string; filler: string; placer?: string; value: string; status?: string; code?: string }): { text: string; id: string } {
  const id = `IC${process.pid}${++seq}`;
  const st = opts.status ?? 'F';
  const text = [
    `MSH|^~\\&|LAB|HOSP|CONFLUX|HOSP|20261202101500||ORU^R01^ORU_R01|${id}|P|2.5.1`,
    `PID|1||${opts.mrn}^^^HOSP^MR||${opts.name}^Test||19700101|F`,
    `OBR|1|${opts.placer ?? ''}|${opts.filler}|2345-7^Glucose^LN|||20261202100000|||||||||||||||20261202101000|||${st}`,
    `OBX|1|NM|${opts.code ?? '2345-7^Glucose^LN'}||${opts.value}|mg/dL^mg/dL^UCUM|70-99|${Number(opts.value) > 99 ? 'H' : 'N'}|||${st}|||20261202100000`,
  ].join('\r');
  return { text, id };
}

function orm(opts: { mrn: string; placer: string }): { text: string; id: string } {
  const id = `ICO${process.pid}${++seq}`;
  const text = [
    `MSH|^~\\&|EHR|HOSP|CONFLUX|HOSP|20261202101500||ORM^O01^ORM_O01|${id}|P|2.5.1`,
    `PID|1||${opts.mrn}^^^HOSP^MR||Order^Test||19700101|F`,
    `ORC|NW|${opts.placer}|||||^^^20261202110000^^R`,
    `OBR|1|${opts.placer}||80048^Basic metabolic panel^CPT`,
  ].join('\r');
  return { text, id };
}

describe.each(DB_KINDS)('identity conflicts are refused and held, never moved (%s)', (kind) => {
  let h: Harness;
  let c: MllpClient;
  let admin: http.Server;
  let adminUrl: string;
  const tag = `${kind}${process.pid}`;

  beforeAll(async () => {
    h = await startHarness(kind);
    h.rt.admin.use(messageAdminRoutes(h.deps, h.rt.repo));
    registerHeldFiling(['mllp'], (tx, m) => fileHeldAsNew(h.deps, tx, m));
    admin = http.createServer(h.rt.app);
    await new Promise<void>((r) => admin.listen(0, '127.0.0.1', r));
    adminUrl = `http://127.0.0.1:${(admin.address() as AddressInfo).port}/admin`;
    c = await MllpClient.connect(h.listener.port);
  });
  afterAll(async () => {
    c?.end();
    await new Promise((r) => admin?.close(r));
    await h?.close();
  });

  const patientId = async (mrn: string) => (await searchIds(h.rt.db, 'Patient', [['identifier', mrn]], 2))[0];
  const reportsOf = async (filler: string) => {
    const ids = await searchIds(h.rt.db, 'DiagnosticReport', [['identifier', filler.split('^')[0]!]], 10);
    return Promise.all(ids.map((id) => h.rt.repo.readResource<DiagnosticReport>('DiagnosticReport', id)));
  };
  const obsOf = async (report: DiagnosticReport) =>
    Promise.all((report.result ?? []).map((r) => h.rt.repo.readResource<Observation>('Observation', r.reference!.split('/')[1]!)));
  const resolve = (id: string, body: unknown) =>
    fetch(`${adminUrl}/messages/${id}/resolve`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-conflux-operator': 'dr.review' }, body: JSON.stringify(body) });

  it('refuses a reused filler order number for another patient: AE, ERR at OBR-3 naming the other patient by identifier, held, nothing changed', async () => {
    const a = oru({ mrn: `AAA1${tag}`, name: 'Alpha', filler: `FL-77${tag}^LAB`, placer: `PL-77${tag}^EHR`, value: '90' });
    expect(msa(await c.request(a.text)).code).toBe('AA');
    const b = oru({ mrn: `BBB2${tag}`, name: 'Bravo', filler: `FL-77${tag}^LAB`, placer: `PL-77${tag}^EHR`, value: '250' });
    const ack = await c.request(b.text);
    expect(msa(ack).code).toBe('AE');
    const err = segments(ack).find((s) => s[0] === 'ERR')!;
    expect(err[2]).toBe('OBR^1^3');
    expect(err[3]).toMatch(/^205\^Duplicate key identifier/);
    expect(errText(ack)).toContain(`AAA1${tag}`);
    expect(errText(ack)).not.toContain('Alpha');

    // Patient AAA1's glucose of 90 is exactly as it was.
    const [report, ...more] = await reportsOf(`FL-77${tag}`);
    expect(more).toHaveLength(0);
    expect(report!.subject?.reference).toBe(`Patient/${await patientId(`AAA1${tag}`)}`);
    expect(report!.meta?.versionId).toBe('1');
    const [obs] = await obsOf(report!);
    expect(obs!.valueQuantity?.value).toBe(90);
    expect(obs!.subject?.reference).toBe(report!.subject?.reference);
    expect(obs!.meta?.versionId).toBe('1');

    const logged = (await h.rt.db.query<{ id: string }>('SELECT id FROM message_log WHERE control_id = $1', [b.id])).rows[0]!;
    const m = (await getMessage(h.rt.db, logged.id))!;
    expect(m.status).toBe('held');
    expect(m.holdKind).toBe('identity-conflict');
    expect(m.error).toContain('OBR-3');
    expect(m.resourceRefs).toEqual([]);

    // A resend gets the same refusal and still stores nothing.
    const again = await c.request(b.text);
    expect(msa(again).code).toBe('AE');
    expect((await reportsOf(`FL-77${tag}`))[0]!.meta?.versionId).toBe('1');
    expect((await getMessage(h.rt.db, logged.id))!.attempts).toBe(2);

    // The same patient's correction still updates its own result.
    const fix = oru({ mrn: `AAA1${tag}`, name: 'Alpha', filler: `FL-77${tag}^LAB`, placer: `PL-77${tag}^EHR`, value: '95', status: 'C' });
    expect(msa(await c.request(fix.text)).code).toBe('AA');
    const [after] = await obsOf((await reportsOf(`FL-77${tag}`))[0]!);
    expect(after!.valueQuantity?.value).toBe(95);
    expect(after!.status).toBe('corrected');
    expect(after!.id).toBe(obs!.id);
  });

  it('files a held message as new for its own patient when an operator says so, audited; that patient’s corrections then go to its own report', async () => {
    const mrnA = `CCC3${tag}`;
    const mrnB = `DDD4${tag}`;
    const filler = `FL-88${tag}^LAB`;
    expect(msa(await c.request(oru({ mrn: mrnA, name: 'Charlie', filler, value: '80' }).text)).code).toBe('AA');
    const b = oru({ mrn: mrnB, name: 'Delta', filler, value: '300' });
    expect(msa(await c.request(b.text)).code).toBe('AE');
    const id = (await h.rt.db.query<{ id: string }>('SELECT id FROM message_log WHERE control_id = $1', [b.id])).rows[0]!.id;

    // A rejection needs a reason; an unknown action is named.
    expect((await resolve(id, { action: 'reject' })).status).toBe(400);
    const bad = await resolve(id, { action: 'merge' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toContain('file-as-new, reject');

    const res = await resolve(id, { action: 'file-as-new', note: 'lab confirmed: reused number after a reset' });
    expect(res.status).toBe(200);
    const resolved = (await res.json()) as { status: string; resolution: string; patientRefs: string[] };
    expect(resolved.status).toBe('processed');
    expect(resolved.resolution).toMatch(/^filed as new by dr\.review at .*: lab confirmed/);
    const pidB = await patientId(mrnB);
    expect(resolved.patientRefs).toEqual([`Patient/${pidB}`]);

    const reports = await reportsOf(filler);
    expect(reports).toHaveLength(2);
    const mine = reports.find((r) => r.subject?.reference === `Patient/${pidB}`)!;
    const pidA = await patientId(mrnA);
    const theirs = reports.find((r) => r.subject?.reference === `Patient/${pidA}`)!;
    expect((await obsOf(mine))[0]!.valueQuantity?.value).toBe(300);
    expect((await obsOf(theirs))[0]!.valueQuantity?.value).toBe(80);
    expect(theirs.meta?.versionId).toBe('1');

    const audits = await h.rt.router.handle({ method: 'GET', path: 'AuditEvent', query: [['entity', `Patient/${pidB}`]], headers: {}, access: (await import('../../src/index.js')).systemAccess('test') });
    const events = ((audits.resource as Bundle).entry ?? []).map((e) => e.resource as AuditEvent).filter((e) => e.subtype?.[0]?.code === 'identity-conflict-file-as-new');
    expect(events).toHaveLength(1);
    expect(events[0]!.agent[0]!.who?.display).toBe('dr.review');

    // Deciding twice is refused.
    expect((await resolve(id, { action: 'reject', note: 'again' })).status).toBe(409);

    // Both patients now hold the number: each one's correction lands on its own report, the other's stays.
    expect(msa(await c.request(oru({ mrn: mrnB, name: 'Delta', filler, value: '310', status: 'C' }).text)).code).toBe('AA');
    expect((await obsOf((await reportsOf(filler)).find((r) => r.id === mine.id)!))[0]!.valueQuantity?.value).toBe(310);
    expect((await obsOf((await reportsOf(filler)).find((r) => r.id === theirs.id)!))[0]!.valueQuantity?.value).toBe(80);
  });

  it('rejects a held message with the operator’s reason, audited; the message stays in the log', async () => {
    const filler = `FL-99${tag}^LAB`;
    expect(msa(await c.request(oru({ mrn: `EEE5${tag}`, name: 'Echo', filler, value: '70' }).text)).code).toBe('AA');
    const b = oru({ mrn: `FFF6${tag}`, name: 'Foxtrot', filler, value: '71' });
    expect(msa(await c.request(b.text)).code).toBe('AE');
    const id = (await h.rt.db.query<{ id: string }>('SELECT id FROM message_log WHERE control_id = $1', [b.id])).rows[0]!.id;
    const res = await resolve(id, { action: 'reject', note: 'test message from the lab' });
    expect(res.status).toBe(200);
    const m = (await res.json()) as { status: string; resolution: string };
    expect(m.status).toBe('error');
    expect(m.resolution).toContain('rejected by dr.review');
    expect(await patientId(`FFF6${tag}`)).toBeUndefined();
    const list = await fetch(`${adminUrl}/messages?holdKind=identity-conflict&status=held`);
    expect(((await list.json()) as { messages: Array<{ id: string }> }).messages.map((x) => x.id)).not.toContain(id);
  });

  it('refuses an order whose placer number is another patient’s order (ORC-2 named)', async () => {
    const placer = `PO-5${tag}^EHR`;
    expect(msa(await c.request(orm({ mrn: `GGG7${tag}`, placer }).text)).code).toBe('AA');
    const ack = await c.request(orm({ mrn: `HHH8${tag}`, placer }).text);
    expect(msa(ack).code).toBe('AE');
    expect(segments(ack).find((s) => s[0] === 'ERR')![2]).toMatch(/^(ORC|OBR)\^1\^2$/);
    expect(errText(ack)).toContain(`GGG7${tag}`);
    const ids = await searchIds(h.rt.db, 'ServiceRequest', [['identifier', `PO-5${tag}`]], 5);
    expect(ids).toHaveLength(1);
    const sr = await h.rt.repo.readResource<ServiceRequest>('ServiceRequest', ids[0]!);
    expect(sr.subject?.reference).toBe(`Patient/${await patientId(`GGG7${tag}`)}`);
  });

  it('refuses an admission whose visit number (PV1-19) is another patient’s encounter', async () => {
    const adt = (mrn: string) =>
      [
        `MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20261202101500||ADT^A01^ADT_A01|ICA${process.pid}${++seq}|P|2.5.1`,
        `EVN|A01|20261202101500`,
        `PID|1||${mrn}^^^HOSP^MR||Visit^Test||19700101|M`,
        `PV1|1|I|W1^101^1||||||||||||||||V-55${tag}^^^HOSP^VN|||||||||||||||||||||||||20261202100000`,
      ].join('\r');
    expect(msa(await c.request(adt(`KKK1${tag}`))).code).toBe('AA');
    const ack = await c.request(adt(`LLL2${tag}`));
    expect(msa(ack).code).toBe('AE');
    expect(segments(ack).find((s) => s[0] === 'ERR')![2]).toBe('PV1^1^19');
    expect(errText(ack)).toContain(`KKK1${tag}`);
  });

  it('files a gateway’s reused OBR-3 (Mindray sends 1 for every snapshot) per observation time, so the next bed’s patient is not refused', async () => {
    const pcd = (mrn: string, at: string, hr: string) =>
      [
        `MSH|^~\\&|GW^00A037EB2175780F^EUI-64|MINDRAY|CONFLUX|HOSP|${at}||ORU^R01^ORU_R01|ICP${process.pid}${++seq}|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO`,
        `PID|||${mrn}^^^HOSP^MR||Bed^Test`,
        `OBR|1|1^MINDRAY_EGATEWAY^00A037EB2175780F^EUI64|1^MINDRAY_EGATEWAY^00A037EB2175780F^EUI64|182777000^monitoring of patient^SCT|||${at}`,
        `OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|${hr}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||${at}`,
      ].join('\r');
    expect(msa(await c.request(pcd(`MMM1${tag}`, '20261202100000', '72'))).code).toBe('AA');
    expect(msa(await c.request(pcd(`NNN2${tag}`, '20261202100500', '88'))).code).toBe('AA');
    // The same snapshot time for another patient is still the same key: refused.
    expect(msa(await c.request(pcd(`OOO3${tag}`, '20261202100500', '90'))).code).toBe('AE');
    for (const [mrn, hr] of [[`MMM1${tag}`, 72], [`NNN2${tag}`, 88]] as const) {
      const ids = await searchIds(h.rt.db, 'Observation', [['subject', `Patient/${await patientId(mrn)}`]], 5);
      expect(ids).toHaveLength(1);
      expect((await h.rt.repo.readResource<Observation>('Observation', ids[0]!)).valueQuantity?.value).toBe(hr);
    }
  });

  it('lets only one of two patients racing for a new order number have it', async () => {
    const filler = `FL-RACE${tag}^LAB`;
    const [c1, c2] = await Promise.all([MllpClient.connect(h.listener.port), MllpClient.connect(h.listener.port)]);
    const acks = await Promise.all([
      c1.request(oru({ mrn: `III9${tag}`, name: 'India', filler, value: '101' }).text),
      c2.request(oru({ mrn: `JJJ0${tag}`, name: 'Juliet', filler, value: '102' }).text),
    ]);
    c1.end();
    c2.end();
    expect(acks.map((a) => msa(a).code).sort()).toEqual(['AA', 'AE']);
    const winner = msa(acks[0]!).code === 'AA' ? `III9${tag}` : `JJJ0${tag}`;
    const reports = await reportsOf(`FL-RACE${tag}`);
    expect(reports).toHaveLength(1);
    expect(reports[0]!.subject?.reference).toBe(`Patient/${await patientId(winner)}`);
  });
});
