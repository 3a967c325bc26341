/**
 * ADT merge over a real MLLP socket into the real repository (PGlite, and PostgreSQL with TEST_DATABASE_URL):
 * the prior record's results, report, specimen and order move to the survivor in the A40's own transaction,
 * as new versions (history keeps the old ones), audited once; a resend and a replay change nothing; merging
 * a patient into itself, into a merged record, or a record already merged elsewhere is refused (AE) and
 * leaves every record as it was. The A40s are the shared corpus's (msfc_ADT-A40-01/-02).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent, DiagnosticReport, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { replayMessage } from '../../facades/hl7v2/inbound/processor.js';
import { mergePatients, searchIds } from '../../src/index.js';
import { listMessages } from '../../src/messages/message-log.js';
import { fixturePath } from '../../tools/shared-data.js';
import { DB_KINDS } from './test-db.js';
import { errText, msa, MllpClient, startHarness, type Harness } from './harness.js';

const corpus = (name: string) => readFileSync(fixturePath('hl7v2/corpus/adt', name));
const BCBS = 'urn:conflux:hl7v2:aa:BCBS';

const a04 = (ctl: string, pid3: string, name: string) =>
  [`MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240101080000||ADT^A04^ADT_A01|${ctl}|P|2.5`, 'EVN|A04|20240101080000', `PID|1||${pid3}||${name}||20180205|F`, 'PV1|1|O'].join('\r');
const oru = (ctl: string, mrn: string, n: string) =>
  [
    `MSH|^~\\&|LIS|GOODLAB|CONFLUX|HOSP|20240102030405+0100||ORU^R01^ORU_R01|${ctl}|P|2.5.1`,
    `PID|1||${mrn}^^^BCBS^MR||Prior^Pat||20180205|F`,
    `ORC|RE|PL-${n}^EHR|FL-${n}^LAB`,
    `OBR|1|PL-${n}^EHR|FL-${n}^LAB|24331-1^Lipid panel^LN|||20240102010000+0100||||||||||||||||20240102030000+0100|||F`,
    'OBX|1|NM|2093-3^Cholesterol^LN||190|mg/dL^mg/dL^UCUM|100-200||||F',
    'OBX|2|NM|2085-9^HDL^LN||55|mg/dL^mg/dL^UCUM|40-60||||F',
    `SPM|1|SP-${n}^LAB||SER^Serum^HL70487`,
  ].join('\r');
const orm = (ctl: string, mrn: string, n: string) =>
  [
    `MSH|^~\\&|EHR|HOSP|CONFLUX|HOSP|20240103080000||ORM^O01|${ctl}|P|2.3`,
    `PID|1||${mrn}^^^BCBS^MR||Prior^Pat||20180205|F`,
    `ORC|NW|ORD-${n}^EHR|||||^^^^^R||20240103075500|||999^Ordering^Olga`,
    `OBR|1|ORD-${n}^EHR||71045^XR chest 1 view^CPT`,
  ].join('\r');
const a40 = (ctl: string, pid3: string, mrg1: string) =>
  [`MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240106080000||ADT^A40^ADT_A39|${ctl}|P|2.5`, 'EVN|A40|20240106080000', `PID|1||${pid3}`, `MRG|${mrg1}`].join('\r');

describe.each(DB_KINDS)('HL7 v2 patient merge (%s)', (kind) => {
  let h: Harness;
  let c: MllpClient;
  beforeAll(async () => {
    h = await startHarness(kind);
    c = await MllpClient.connect(h.listener.port);
  }, 60_000);
  afterAll(async () => {
    c?.end();
    await h?.close();
  });

  const patientId = async (system: string, value: string): Promise<string> => {
    const r = await h.rt.db.query<{ id: string }>(
      `SELECT id FROM resource WHERE resource_type = 'Patient' AND NOT deleted AND content::jsonb->'identifier' @> $1::jsonb`,
      [JSON.stringify([{ system, value }])],
    );
    expect(r.rows, `one Patient ${system}|${value}`).toHaveLength(1);
    return r.rows[0]!.id;
  };
  const patient = async (id: string) => h.rt.repo.readResource<Patient>('Patient', id);
  /** Current rows in a patient's compartment, by the compartments the repository stored. */
  const compartment = async (id: string): Promise<string[]> => {
    const r = await h.rt.db.query<{ ref: string }>(
      `SELECT resource_type || '/' || id AS ref FROM resource WHERE compartments @> ARRAY[$1]::text[] AND NOT deleted ORDER BY 1`,
      [`Patient/${id}`],
    );
    return r.rows.map((x) => x.ref);
  };
  const historyRows = async () => Number((await h.rt.db.query<{ n: number }>('SELECT count(*)::int AS n FROM resource_history')).rows[0]!.n);
  const audits = async (patientRef: string): Promise<AuditEvent[]> => {
    const r = await h.rt.db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'AuditEvent' AND NOT deleted ORDER BY last_updated`);
    return r.rows
      .map((x) => JSON.parse(x.content) as AuditEvent)
      .filter((a) => a.subtype?.some((s) => s.code === 'merge') && a.entity?.some((e) => e.what?.reference === patientRef));
  };
  const ok = async (text: string | Buffer) => {
    const ack = await c.request(text);
    // The corpus A40s ask for enhanced mode (MSH-15/16 NE): their commit ACK is CA.
    expect(['AA', 'CA'], errText(ack)).toContain(msa(ack).code);
    return ack;
  };

  it('A40 moves the prior record’s results, report, specimen and order to the survivor, in new versions, audited', async () => {
    await ok(a04('M-A04-1', '12345^^^BCBS^MR', 'Test^Test^A'));
    await ok(oru('M-ORU-1', '56789', 'M1'));
    await ok(orm('M-ORM-1', '56789', 'M1'));
    const survivorId = await patientId(BCBS, '12345');
    const priorId = await patientId(BCBS, '56789');
    const priorBefore = await patient(priorId);
    const survivorBefore = await patient(survivorId);
    const toMove = (await compartment(priorId)).filter((r) => r !== `Patient/${priorId}`);
    expect(toMove.filter((r) => r.startsWith('Observation/'))).toHaveLength(2);
    for (const t of ['DiagnosticReport/', 'Specimen/', 'ServiceRequest/']) expect(toMove.some((r) => r.startsWith(t)), t).toBe(true);

    // The corpus message, byte for byte: PID 12345^^^BCBS^MR survives, MRG 56789^^^BCBS^MR is merged.
    await ok(corpus('msfc_ADT-A40-01.hl7'));

    const prior = await patient(priorId);
    const survivor = await patient(survivorId);
    expect(prior.active).toBe(false);
    expect(prior.link).toEqual([{ other: { reference: `Patient/${survivorId}` }, type: 'replaced-by' }]);
    expect(survivor.link).toEqual([{ other: { reference: `Patient/${priorId}` }, type: 'replaces' }]);
    // Identity is never rewritten: each record keeps exactly its own identifiers and name.
    expect(prior.identifier).toEqual(priorBefore.identifier);
    expect(prior.name).toEqual(priorBefore.name);
    expect(survivor.identifier).toEqual(survivorBefore.identifier);
    expect(survivor.identifier!.some((i) => i.value === '56789')).toBe(false);
    expect(survivor.active).toBe(true);

    // Everything moved: nothing clinical is left in the prior compartment (its own record and the audit remain).
    const left = (await compartment(priorId)).filter((r) => !r.startsWith('Patient/') && !r.startsWith('AuditEvent/'));
    expect(left).toEqual([]);
    const now = await compartment(survivorId);
    for (const ref of toMove) expect(now, ref).toContain(ref);
    // Each move is a new version; the old one, on the prior record, stays in history.
    for (const ref of toMove) {
      const [type, id] = ref.split('/') as [string, string];
      const cur = await h.rt.repo.read(type, id);
      const old = await h.rt.repo.vread(type, id, String(cur.versionId - 1));
      expect(JSON.stringify(JSON.parse(cur.content!)), ref).toContain(`Patient/${survivorId}`);
      expect(JSON.stringify(JSON.parse(cur.content!)), ref).not.toContain(`Patient/${priorId}`);
      expect(JSON.stringify(JSON.parse(old.content!)), ref).toContain(`Patient/${priorId}`);
    }
    // A search by subject follows the move (the index was rewritten with the version).
    const bySubject = await searchIds(h.rt.db, 'Observation', [['subject', `Patient/${survivorId}`]], 10);
    expect(bySubject.map((id) => `Observation/${id}`).sort()).toEqual(toMove.filter((r) => r.startsWith('Observation/')).sort());
    expect(await searchIds(h.rt.db, 'Observation', [['subject', `Patient/${priorId}`]], 10)).toEqual([]);

    const [audit, ...more] = await audits(`Patient/${priorId}`);
    expect(more).toEqual([]);
    expect(audit!.entity!.map((e) => e.what!.reference).sort()).toEqual([`Patient/${priorId}`, `Patient/${survivorId}`].sort());
    expect(audit!.entity!.find((e) => e.what!.reference === `Patient/${priorId}`)!.detail).toEqual([{ type: 'moved', valueString: String(toMove.length) }]);
    expect(audit!.outcomeDesc).toContain(`${toMove.length} resource(s) moved`);
    expect(audit!.outcomeDesc).toContain('ADT^A40');
    expect(audit!.agent![0]!.who!.display).toContain('Ntierprise');
  });

  it('a resend and a replay of the A40 change nothing; the second corpus A40 merges its other pair only', async () => {
    const priorId = await patientId(BCBS, '56789');
    const versions = await historyRows();
    const resend = await c.request(corpus('msfc_ADT-A40-01.hl7'));
    expect(msa(resend)).toMatchObject({ code: 'CA', text: expect.stringContaining('duplicate') });
    const [logged] = await listMessages(h.rt.db, { controlId: '8919-40' });
    // A replay runs mapping, transaction and merge again: still no new version, no second AuditEvent.
    const replayed = await replayMessage(h.deps, logged!.id);
    expect(replayed.status).toBe('processed');
    expect(await historyRows()).toBe(versions);
    expect(await audits(`Patient/${priorId}`)).toHaveLength(1);

    // msfc_ADT-A40-02 carries the same MSH-10 as -01 (a different message): a new control id, bytes otherwise as filed.
    const two = corpus('msfc_ADT-A40-02.hl7').toString('latin1').replace('|8919-40|', '|8919-40-02|');
    await ok(Buffer.from(two, 'latin1'));
    expect(await audits(`Patient/${priorId}`)).toHaveLength(1);
    // 569 and 145 were unknown: created, the prior record as merged; nothing to move, the links audited.
    const p569 = await patient(await patientId(BCBS, '569'));
    const p145 = await patient(await patientId(BCBS, '145'));
    expect(p569).toMatchObject({ active: false, link: [{ other: { reference: `Patient/${p145.id}` }, type: 'replaced-by' }] });
    expect(p145.link).toEqual([{ other: { reference: `Patient/${p569.id}` }, type: 'replaces' }]);
    const [audit] = await audits(`Patient/${p569.id}`);
    expect(audit!.entity!.find((e) => e.what!.reference === `Patient/${p569.id}`)!.detail).toEqual([{ type: 'moved', valueString: '0' }]);
  });

  it('a result sent under the merged record’s old MRN lands on the survivor: a correction updates the moved report, a new one files there', async () => {
    const priorId = await patientId(BCBS, '56789');
    const survivorId = await patientId(BCBS, '12345');
    // The lab corrects the merged order under the old MRN: the moved report is updated where it now is.
    const corrected = oru('M-ORU-1C', '56789', 'M1').replace('||190|', '||195|').replace('100-200||||F', '100-200||||C');
    await ok(corrected);
    const [reportId] = await searchIds(h.rt.db, 'DiagnosticReport', [['identifier', 'FL-M1']], 5);
    const report = await h.rt.repo.readResource<DiagnosticReport>('DiagnosticReport', reportId!);
    expect(report.subject?.reference).toBe(`Patient/${survivorId}`);
    const chol = (await Promise.all(report.result!.map((r) => h.rt.repo.readResource<Observation>('Observation', r.reference!.split('/')[1]!)))).find(
      (o) => o.code.coding?.[0]?.code === '2093-3',
    )!;
    expect(chol.valueQuantity?.value).toBe(195);
    expect(chol.subject?.reference).toBe(`Patient/${survivorId}`);
    // A new order under the old MRN: filed to the survivor; the merged record stays empty of clinical data.
    await ok(oru('M-ORU-3', '56789', 'M3'));
    const [newReport] = await searchIds(h.rt.db, 'DiagnosticReport', [['identifier', 'FL-M3']], 5);
    expect((await h.rt.repo.readResource<DiagnosticReport>('DiagnosticReport', newReport!)).subject?.reference).toBe(`Patient/${survivorId}`);
    expect((await compartment(priorId)).filter((r) => !r.startsWith('Patient/') && !r.startsWith('AuditEvent/'))).toEqual([]);
    expect((await patient(priorId)).active).toBe(false);
  });

  it('a later A08 for either record updates its demographics but never undoes the merge', async () => {
    const priorId = await patientId(BCBS, '56789');
    const survivorId = await patientId(BCBS, '12345');
    const a08 = (ctl: string, pid3: string, name: string) =>
      [`MSH|^~\\&|ADT|HOSP|CONFLUX|HOSP|20240107080000||ADT^A08^ADT_A01|${ctl}|P|2.5`, 'EVN|A08|20240107080000', `PID|1||${pid3}||${name}||20180205|F`, 'PV1|1|O'].join('\r');
    await ok(a08('M-A08-1', '56789^^^BCBS^MR', 'Prior^Renamed'));
    await ok(a08('M-A08-2', '12345^^^BCBS^MR', 'Test^Renamed'));
    const prior = await patient(priorId);
    const survivor = await patient(survivorId);
    expect(prior.name?.[0]?.family).toBe('Prior');
    expect(prior.name?.[0]?.given).toEqual(['Renamed']);
    expect(prior.active).toBe(false);
    expect(prior.link).toEqual([{ other: { reference: `Patient/${survivorId}` }, type: 'replaced-by' }]);
    expect(survivor.name?.[0]?.given).toEqual(['Renamed']);
    expect(survivor.link).toEqual([{ other: { reference: `Patient/${priorId}` }, type: 'replaces' }]);
    // …so results under the old MRN still go to the survivor.
    await ok(oru('M-ORU-4', '56789', 'M4'));
    const [r4] = await searchIds(h.rt.db, 'DiagnosticReport', [['identifier', 'FL-M4']], 5);
    expect((await h.rt.repo.readResource<DiagnosticReport>('DiagnosticReport', r4!)).subject?.reference).toBe(`Patient/${survivorId}`);
  });

  it('refuses a merge into itself, into a merged record, or of a record merged elsewhere, and changes nothing', async () => {
    await ok(a04('M-A04-2', 'SELF1^^^BCBS^MR~SELF2^^^BCBS^PI', 'Self^Sam'));
    await ok(oru('M-ORU-2', 'OTHER1', 'M2'));
    const selfId = await patientId(BCBS, 'SELF1');
    const otherId = await patientId(BCBS, 'OTHER1');
    const priorId = await patientId(BCBS, '56789');
    const survivorId = await patientId(BCBS, '12345');
    const versions = await historyRows();
    const otherData = await compartment(otherId);

    // SELF2 is the same record as SELF1: the conditional create finds it, the merge refuses.
    const self = await c.request(a40('M-A40-S', 'SELF1^^^BCBS^MR', 'SELF2^^^BCBS^PI'));
    expect(msa(self).code).toBe('AE');
    expect(errText(self)).toContain(`Patient/${selfId} cannot be merged into itself`);

    // 56789 was merged into 12345: it cannot survive another merge.
    const intoMerged = await c.request(a40('M-A40-T', '56789^^^BCBS^MR', 'OTHER1^^^BCBS^MR'));
    expect(msa(intoMerged).code).toBe('AE');
    expect(errText(intoMerged)).toContain(`Patient/${priorId} cannot survive a merge: it was itself merged into Patient/${survivorId}`);

    // 56789 is already merged into 12345: not also into OTHER1.
    const twice = await c.request(a40('M-A40-U', 'OTHER1^^^BCBS^MR', '56789^^^BCBS^MR'));
    expect(msa(twice).code).toBe('AE');
    expect(errText(twice)).toContain(`Patient/${priorId} was already merged into Patient/${survivorId}`);

    expect(await historyRows()).toBe(versions);
    expect(await compartment(otherId)).toEqual(otherData);
    expect((await patient(otherId)).active).toBe(true);
    for (const ctl of ['M-A40-S', 'M-A40-T', 'M-A40-U']) expect((await listMessages(h.rt.db, { controlId: ctl }))[0]!.status).toBe('error');
  });

  it('the core operation refuses unknown and malformed references with a clear error', async () => {
    const survivorId = await patientId(BCBS, '12345');
    const run = (source: string, target: string) => h.rt.db.transaction((tx) => mergePatients(h.rt.repo, tx, { source, target, who: 'test', reason: 'test' }));
    await expect(run('Patient/does-not-exist', `Patient/${survivorId}`)).rejects.toThrow('the prior record (source) Patient/does-not-exist is not known');
    await expect(run('Observation/1', `Patient/${survivorId}`)).rejects.toThrow('source must be a "Patient/<id>" reference');
    await expect(run(`Patient/${survivorId}`, `Patient/${survivorId}`)).rejects.toThrow('cannot be merged into itself');
    const res: Resource = await h.rt.repo.readResource('Patient', survivorId);
    expect((res as Patient).active).toBe(true);
  });
});
