/**
 * Identity conflicts (docs/design.md principle 5, issue 20): an instance whose Study Instance UID is already another
 * patient's study is refused over real DIMSE (DCMTK storescu) and STOW-RS, held in the message log, and
 * changes nothing of the existing study (index and FHIR ImagingStudy); same-patient resends and new instances
 * keep working, also when two associations race for one new study.
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent, Bundle, ImagingStudy, Patient } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { getMessage, listMessages, recordMessage, type MessageSummary } from '../../src/messages/message-log.js';
import { resolveHeldMessage } from '../../src/messages/held-resolution.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { derivedUid } from '../../facades/dicom/file-as-new.js';
import { type DicomJson, type ParsedHeader, parsePart10Header, str } from '../../facades/dicom/part10.js';
import { patientKey } from '../../facades/dicom/patient-identity.js';
import { DATA, facadeServices, freePort, run } from './helpers.js';
import { until } from '../helpers/until.js';

const AE = 'CONFLUX';
const STUDY = '1.2.826.0.1.3680043.8.498.4242.1';
const SERIES = '1.2.826.0.1.3680043.8.498.4242.1.1';

describe.each(testDatabases())('DICOM identity conflicts on %s', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let port: number;
  const work = mkdtempSync(path.join(tmpdir(), 'conflux-dicom-identity-'));
  const addr = () => ['127.0.0.1', String(port)];

  /** A copy of CT_small.dcm with the given attributes, written by DCMTK's dcmodify (-i inserts or replaces). */
  async function variant(name: string, attrs: Record<string, string>): Promise<string> {
    const file = path.join(work, `${name}.dcm`);
    copyFileSync(path.join(DATA, 'CT_small.dcm'), file);
    const args = Object.entries(attrs).flatMap(([tag, v]) => ['-i', `(${tag})=${v}`]);
    const r = await run('dcmodify', ['-nb', ...args, file]);
    expect(r.code, r.stderr).toBe(0);
    return file;
  }
  const instance = (name: string, patientId: string, sop: string, extra: Record<string, string> = {}) =>
    variant(name, { '0010,0020': patientId, '0010,0021': 'HOSP', '0020,000D': STUDY, '0020,000E': SERIES, '0008,0018': sop, ...extra });

  /** storescu with -d, whose log shows the response's DIMSE status and its Error Comment (0000,0902). */
  const storescu = async (file: string) => {
    const r = await run('storescu', ['-d', '-aet', 'STORESCU', '-aec', AE, ...addr(), file]);
    const out = r.stdout + r.stderr;
    return { status: /DIMSE Status\s*:\s*(0x[0-9a-f]{4})/i.exec(out)?.[1]?.toLowerCase(), comment: /\(0000,0902\) LO \[([^\]]*)\]/.exec(out)?.[1], out };
  };

  const study = async (uid: string) =>
    (await db.query<{ patient_id: string; issuer: string; patient_name: string; change_seq: string }>('SELECT patient_id, issuer, patient_name, change_seq FROM dicom_study WHERE study_uid = $1', [uid])).rows[0];
  const sops = async (uid: string) => (await db.query<{ sop_uid: string }>('SELECT sop_uid FROM dicom_instance WHERE study_uid = $1 ORDER BY sop_uid', [uid])).rows.map((r) => r.sop_uid);
  const fhir = async <T>(p: string): Promise<T> => (await (await fetch(`${server.fhir}/${p}`)).json()) as T;
  const imagingStudy = async (uid: string) => {
    await facadeServices(server).sync.flush([uid]);
    const b = await fhir<Bundle<ImagingStudy>>(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${uid}`)}`);
    expect(b.entry).toHaveLength(1);
    return b.entry![0]!.resource!;
  };
  const patientIdOf = async (ref: string) => (await fhir<Patient>(ref)).identifier?.[0]?.value;

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    port = await freePort();
    server = await startTestServer(db, { DICOM_PORT: String(port), DICOM_ACCEPT_ANY_AE: 'true', DATA_DIR: path.join(work, 'data') });
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  let firstStudy: ImagingStudy;

  it('stores the first patient’s study', async () => {
    const r = await storescu(await instance('a1', 'PAT-A', `${SERIES}.1`));
    expect(r.status, r.out).toBe('0x0000');
    expect(await study(STUDY)).toMatchObject({ patient_id: 'PAT-A', issuer: 'HOSP' });
    firstStudy = await imagingStudy(STUDY);
    expect(await patientIdOf(firstStudy.subject!.reference!)).toBe('PAT-A');
  });

  it('refuses a C-STORE of another patient into that study with 0xC001 and an Error Comment, holds it, changes nothing', async () => {
    const before = await study(STUDY);
    const r = await storescu(await instance('b1', 'PAT-B', `${SERIES}.2`, { '0010,0010': 'Other^Patient' }));
    expect(r.status).toBe('0xc001');
    // The comment names the other patient's ID and (the tail of) the study, never a name; it fits LO's 64 bytes.
    expect(r.comment).toMatch(/^Study is patient ID PAT-A's, study \.\.\.[0-9.]*4242\.1$/);
    expect(r.comment!.length).toBe(64);

    // Nothing of the existing study changed: index row (patient, name, version counter), instances, FHIR.
    expect(await study(STUDY)).toEqual(before);
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`]);
    const after = await imagingStudy(STUDY);
    expect(after.subject).toEqual(firstStudy.subject);
    expect(after.meta?.versionId).toBe(firstStudy.meta?.versionId);

    const held = await listMessages(db, { channel: 'dicom', status: 'held' });
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({ holdKind: 'identity-conflict', controlId: `${SERIES}.2`, ack: '0xc001', messageType: 'C-STORE' });
    expect(held[0]!.error).toMatch(new RegExp(`Study Instance UID ${STUDY.replace(/\./g, '\\.')} already belongs to a study of another patient, Patient ID PAT-A \\(issuer HOSP\\)`));
    expect(held[0]!.error).not.toMatch(/Other|Patient\^/);
    // The refused blob is not kept as a stored instance: only the message log has its bytes (Part 10, as received).
    const raw = (await db.query<{ raw: Uint8Array }>('SELECT raw FROM message_log WHERE id = $1', [held[0]!.id])).rows[0]!.raw;
    const logged = parsePart10Header(Buffer.from(raw), true) as ParsedHeader;
    expect([str(logged.dataset, '00080018'), str(logged.dataset, '00100020')]).toEqual([`${SERIES}.2`, 'PAT-B']);
    const blobs = readdirSync(path.join(work, 'data', 'blobs', 'dicom'), { recursive: true }).map(String);
    expect(blobs.some((f) => path.basename(f).startsWith(`${SERIES}.1.`))).toBe(true);
    expect(blobs.filter((f) => path.basename(f).startsWith(`${SERIES}.2.`))).toEqual([]);
  });

  it('still takes a resend and a new instance of the same patient, and a name correction for the same ID', async () => {
    expect((await storescu(path.join(work, 'a1.dcm'))).status).toBe('0x0000');
    const r = await storescu(await instance('a2', 'PAT-A', `${SERIES}.3`, { '0010,0010': 'Corrected^Name' }));
    expect(r.status, r.out).toBe('0x0000');
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
    expect(await study(STUDY)).toMatchObject({ patient_id: 'PAT-A', patient_name: 'Corrected^Name' });
    const s = await imagingStudy(STUDY);
    expect(s.subject).toEqual(firstStudy.subject);
    expect(s.numberOfInstances).toBe(2);
  });

  it('refuses the same Patient ID under another issuer, and an instance without Patient ID', async () => {
    const r1 = await storescu(await instance('c1', 'PAT-A', `${SERIES}.4`, { '0010,0021': 'OTHERHOSP' }));
    expect(r1.status).toBe('0xc001');
    const r2 = await storescu(await instance('c2', '', `${SERIES}.5`));
    expect(r2.status).toBe('0xc001');
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
    expect(await study(STUDY)).toMatchObject({ patient_id: 'PAT-A', issuer: 'HOSP' });
  });

  it('refuses a series or SOP Instance UID of the study when it comes with another patient under a new Study UID', async () => {
    const other = '1.2.826.0.1.3680043.8.498.4242.9';
    const viaSeries = await storescu(await instance('d1', 'PAT-B', `${SERIES}.6`, { '0020,000D': other }));
    expect(viaSeries.status).toBe('0xc001');
    expect(viaSeries.comment).toMatch(/^Series is patient ID PAT-A's, study /);
    const viaSop = await storescu(await instance('d2', 'PAT-B', `${SERIES}.1`, { '0020,000D': other, '0020,000E': `${other}.1` }));
    expect(viaSop.comment).toMatch(/^SOP UID is patient ID PAT-A's, study /);
    expect(await study(other)).toBeUndefined();
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
  });

  it('answers STOW-RS with FailedSOPSequence 0xC001 and 409 when nothing was stored; held under dicomweb', async () => {
    const file = await instance('e1', 'PAT-B', `${SERIES}.7`);
    const boundary = 'identity-boundary';
    const body = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), readFileSync(file), Buffer.from(`\r\n--${boundary}--\r\n`)]);
    const res = await fetch(`${server.url}/dicomweb/studies`, {
      method: 'POST',
      headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, accept: 'application/dicom+json' },
      body: new Uint8Array(body),
    });
    expect(res.status).toBe(409);
    const json = (await res.json()) as DicomJson;
    expect(json['00081199']).toBeUndefined();
    const failed = json['00081198']!.Value as DicomJson[];
    expect(failed).toHaveLength(1);
    expect(failed[0]!['00081197']!.Value).toEqual([0xc001]);
    expect(str(failed[0], '00081155')).toBe(`${SERIES}.7`);
    expect(str(failed[0], '00000902')).toMatch(/^Study is patient ID PAT-A's, study \.\.\.[0-9.]*4242\.1$/);
    expect(str(failed[0], '00000902').length).toBeLessThanOrEqual(64);
    const held = await listMessages(db, { channel: 'dicomweb', status: 'held' });
    expect(held.map((m) => [m.holdKind, m.controlId])).toEqual([['identity-conflict', `${SERIES}.7`]]);
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
  });

  it('lets exactly one of two concurrent associations create a new study; the other patient is refused', async () => {
    const uid = '1.2.826.0.1.3680043.8.498.4242.2';
    const files = await Promise.all([
      instance('r1', 'PAT-C', `${uid}.1.1`, { '0020,000D': uid, '0020,000E': `${uid}.1` }),
      instance('r2', 'PAT-D', `${uid}.1.2`, { '0020,000D': uid, '0020,000E': `${uid}.1` }),
    ]);
    const results = await Promise.all(files.map((f) => storescu(f)));
    const ok = results.map((r) => r.status === '0x0000');
    expect(ok.filter(Boolean)).toHaveLength(1);
    const winner = ok[0] ? 'PAT-C' : 'PAT-D';
    const loser = ok[0] ? results[1]! : results[0]!;
    expect(loser.status).toBe('0xc001');
    expect(loser.comment).toMatch(new RegExp(`^Study is patient ID ${winner}'s`));
    expect(await study(uid)).toMatchObject({ patient_id: winner });
    expect(await sops(uid)).toEqual([ok[0] ? `${uid}.1.1` : `${uid}.1.2`]);
    expect(await patientIdOf((await imagingStudy(uid)).subject!.reference!)).toBe(winner);
  });

  /** The admin API, as the CLI's `messages resolve` uses it. */
  const resolve = async (id: string, body: Record<string, string>) => {
    const res = await fetch(`${server.url}/admin/messages/${id}/resolve`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-conflux-operator': 'Practitioner/op1' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as MessageSummary & { error: string } };
  };
  const heldId = async (channel: string, sop: string) => (await listMessages(db, { channel, status: 'held', controlId: sop }))[0]!.id;
  /** What the filing derives for PAT-B of HOSP (patient-identity.ts): its Patient ID and issuer, no qualifiers. */
  const patB = patientKey({ patientId: 'PAT-B', issuer: 'HOSP', universalId: '', universalIdType: '' }, STUDY);
  const NEW_STUDY = derivedUid(STUDY, patB);
  const NEW_SERIES = derivedUid(SERIES, patB);
  const imagingStudies = async (uid: string) => (await fhir<Bundle<ImagingStudy>>(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${uid}`)}`)).entry ?? [];
  /** The stored Part 10 file of an instance, as WADO-RS serves it (the blob the index points at). */
  const storedFile = async (sop: string) => {
    const svc = facadeServices(server);
    const row = (await svc.store.instance(sop))!;
    const parts: Buffer[] = [];
    for await (const c of await svc.store.blobs.get(row.blob_key)) parts.push(c as Buffer);
    return { row, header: parsePart10Header(Buffer.concat(parts), true) as ParsedHeader };
  };
  const qido = async (query: string) => {
    const res = await fetch(`${server.url}/dicomweb/studies?${query}`, { headers: { accept: 'application/dicom+json' } });
    return res.status === 204 ? [] : ((await res.json()) as DicomJson[]);
  };

  it('files a held instance as new for its own patient under coerced UIDs; the other patient’s study is untouched', async () => {
    const before = await study(STUDY);
    const beforeSops = await sops(STUDY);
    const beforeImaging = (await imagingStudies(STUDY))[0]!.resource!;
    expect(NEW_STUDY).toMatch(/^2\.25\.[1-9][0-9]{0,38}$/);

    const { status, body } = await resolve(await heldId('dicom', `${SERIES}.2`), { action: 'file-as-new', note: 'CT confirms: PAT-B was scanned, study UID reused' });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ status: 'processed', holdKind: 'identity-conflict' });
    expect(body.resolution).toMatch(/^filed as new by Practitioner\/op1 .*study UID reused/);
    // The log row names the ImagingStudy and the new UIDs; the SOP Instance UID was not the conflicting one: kept.
    expect(body.resourceRefs).toEqual([expect.stringMatching(/^ImagingStudy\/[^/]+$/), `urn:oid:${NEW_STUDY}`, `urn:oid:${NEW_SERIES}`, `urn:oid:${SERIES}.2`]);
    expect(body.patientRefs).toEqual([expect.stringMatching(/^Patient\//)]);

    // The other patient's study: same index row (patient, version counter), instances, ImagingStudy version.
    expect(await study(STUDY)).toEqual(before);
    expect(await sops(STUDY)).toEqual(beforeSops);
    const otherAfter = await imagingStudy(STUDY);
    expect(otherAfter.meta?.versionId).toBe(beforeImaging.meta?.versionId);
    expect(otherAfter.subject).toEqual(firstStudy.subject);

    // The new study: PAT-B's, with the instance under the coerced Study/Series UIDs.
    expect(await study(NEW_STUDY)).toMatchObject({ patient_id: 'PAT-B', issuer: 'HOSP', patient_name: 'Other^Patient' });
    expect(await sops(NEW_STUDY)).toEqual([`${SERIES}.2`]);
    const { row, header: h } = await storedFile(`${SERIES}.2`);
    expect([row.study_uid, row.series_uid, row.source_ae]).toEqual([NEW_STUDY, NEW_SERIES, 'STORESCU']);
    expect([str(h.dataset, '0020000D'), str(h.dataset, '0020000E'), str(h.dataset, '00080018'), str(h.dataset, '00100020')]).toEqual([NEW_STUDY, NEW_SERIES, `${SERIES}.2`, 'PAT-B']);
    expect(str(h.meta, '00020003')).toBe(`${SERIES}.2`);
    // The original UIDs, the standard way: Original Attributes Sequence, reason COERCE.
    const original = h.dataset['04000561']!.Value as DicomJson[];
    expect(original).toHaveLength(1);
    expect(str(original[0], '04000565')).toBe('COERCE');
    expect(str(original[0], '04000563')).toBe('CONFLUX');
    const modified = original[0]!['04000550']!.Value as DicomJson[];
    expect([str(modified[0], '0020000D'), str(modified[0], '0020000E'), modified[0]!['00080018']]).toEqual([STUDY, SERIES, undefined]);

    // QIDO-RS finds it under the new patient only.
    expect((await qido('PatientID=PAT-B')).map((d) => str(d, '0020000D'))).toContain(NEW_STUDY);
    expect((await qido('PatientID=PAT-A')).map((d) => str(d, '0020000D'))).not.toContain(NEW_STUDY);
    // WADO-RS serves it.
    const wado = await fetch(`${server.url}/dicomweb/studies/${NEW_STUDY}/series/${NEW_SERIES}/instances/${SERIES}.2`, { headers: { accept: 'multipart/related; type="application/dicom"' } });
    expect(wado.status).toBe(200);
    expect((await wado.arrayBuffer()).byteLength).toBeGreaterThan(row.size as number);

    // Its ImagingStudy was written with the resolution (no sync run needed), for PAT-B.
    const created = await imagingStudies(NEW_STUDY);
    expect(created).toHaveLength(1);
    const im = created[0]!.resource!;
    expect(`ImagingStudy/${im.id}`).toBe(body.resourceRefs[0]);
    expect(await patientIdOf(im.subject!.reference!)).toBe('PAT-B');
    expect(im.subject!.reference).toBe(body.patientRefs[0]);
    expect(im.series?.map((se) => [se.uid, se.instance?.map((i) => i.uid)])).toEqual([[NEW_SERIES, [`${SERIES}.2`]]]);
    expect(await patientIdOf(firstStudy.subject!.reference!)).toBe('PAT-A');
    expect((await db.query<{ fhir_dirty: boolean }>('SELECT fhir_dirty FROM dicom_study WHERE study_uid = $1', [NEW_STUDY])).rows[0]!.fhir_dirty).toBe(false);

    // Audited: who, what, the patients and the ImagingStudy.
    const audits = await fhir<Bundle<AuditEvent>>(`AuditEvent?_count=200`);
    const audit = audits.entry?.map((e) => e.resource!).find((a) => a.subtype?.some((c) => c.code === 'identity-conflict-file-as-new') && a.outcomeDesc?.includes(body.id));
    expect(audit, JSON.stringify(audits.entry?.length)).toBeDefined();
    expect(audit!.agent[0]!.who).toEqual({ reference: 'Practitioner/op1' });
    expect(audit!.entity?.map((e) => e.what?.reference)).toEqual(expect.arrayContaining([body.patientRefs[0], body.resourceRefs[0], `urn:oid:${NEW_STUDY}`]));

    // Decided once.
    expect((await resolve(body.id, { action: 'file-as-new' })).status).toBe(409);
  });

  it('files a second held instance of the same study into the same new study and series (here one sent by STOW-RS)', async () => {
    const before = await study(STUDY);
    const imagingId = (await imagingStudies(NEW_STUDY))[0]!.resource!.id;
    const done = await resolveHeldMessage({ db, repo: server.runtime.repo }, await heldId('dicomweb', `${SERIES}.7`), { action: 'file-as-new', who: 'Practitioner/op1' });
    expect(done.status).toBe('processed');
    expect(done.resourceRefs).toEqual([`ImagingStudy/${imagingId}`, `urn:oid:${NEW_STUDY}`, `urn:oid:${NEW_SERIES}`, `urn:oid:${SERIES}.7`]);
    expect(await sops(NEW_STUDY)).toEqual([`${SERIES}.2`, `${SERIES}.7`]);
    expect((await storedFile(`${SERIES}.7`)).row.series_uid).toBe(NEW_SERIES);
    const im = (await imagingStudies(NEW_STUDY))[0]!.resource!;
    expect(im.numberOfInstances).toBe(2);
    expect(im.series?.map((se) => se.uid)).toEqual([NEW_SERIES]);
    expect(await study(STUDY)).toEqual(before);
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
  });

  it('gives the instance a new SOP Instance UID too when that UID is the conflicting one, leaving the stored instance as it is', async () => {
    const other = '1.2.826.0.1.3680043.8.498.4242.9';
    const stored = await storedFile(`${SERIES}.1`);
    const done = await resolveHeldMessage({ db, repo: server.runtime.repo }, await heldId('dicom', `${SERIES}.1`), { action: 'file-as-new', who: 'Practitioner/op1' });
    const newStudy = derivedUid(other, patientKey({ patientId: 'PAT-B', issuer: 'HOSP', universalId: '', universalIdType: '' }, other));
    const newSop = derivedUid(`${SERIES}.1`, patB);
    expect(done.resourceRefs.slice(1)).toEqual([`urn:oid:${newStudy}`, `urn:oid:${derivedUid(`${other}.1`, patB)}`, `urn:oid:${newSop}`]);
    expect(await sops(newStudy)).toEqual([newSop]);
    const coerced = await storedFile(newSop);
    const modified = (coerced.header.dataset['04000561']!.Value as DicomJson[])[0]!['04000550']!.Value as DicomJson[];
    expect(str(modified[0], '00080018')).toBe(`${SERIES}.1`);
    expect(str(coerced.header.meta, '00020003')).toBe(newSop);
    // PAT-A's instance with that UID: same study, same blob.
    expect(await storedFile(`${SERIES}.1`)).toMatchObject({ row: { study_uid: STUDY, blob_key: stored.row.blob_key } });
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
  });

  it('still files the instance when its ImagingStudy cannot be written with the resolution; the sync after the commit reports it', async () => {
    // The racing study's refused instance; its new study's ImagingStudy identifier is taken beforehand by another
    // patient's ImagingStudy (edited through FHIR), so the sync's own identity guard refuses to write it.
    const uid = '1.2.826.0.1.3680043.8.498.4242.2';
    const held = (await listMessages(db, { channel: 'dicom', status: 'held' })).find((m) => m.controlId?.startsWith(`${uid}.1.`))!;
    const h = parsePart10Header((await getMessage(db, held.id))!.raw, true) as ParsedHeader;
    const pid = str(h.dataset, '00100020');
    const newStudy = derivedUid(uid, patientKey({ patientId: pid, issuer: 'HOSP', universalId: '', universalIdType: '' }, uid));
    const squatter = await fetch(`${server.fhir}/ImagingStudy`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'ImagingStudy', status: 'available', identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:${newStudy}` }], subject: firstStudy.subject }),
    });
    expect(squatter.status).toBe(201);
    const squatterId = ((await squatter.json()) as ImagingStudy).id;

    const done = await resolveHeldMessage({ db, repo: server.runtime.repo }, held.id, { action: 'file-as-new', who: 'Practitioner/op1' });
    expect(done.status).toBe('processed');
    expect(done.resourceRefs[0]).toBe(`urn:oid:${newStudy}`);
    expect(await sops(newStudy)).toEqual([held.controlId]);
    // The sync after the commit ran (and refused, as a sync does): the study is no longer waiting for it.
    await until(async () => (await db.query<{ fhir_dirty: boolean }>('SELECT fhir_dirty FROM dicom_study WHERE study_uid = $1', [newStudy])).rows[0]?.fhir_dirty === false, 'the sync of the new study');
    const found = await imagingStudies(newStudy);
    expect(found.map((e) => [e.resource!.id, e.resource!.subject])).toEqual([[squatterId, firstStudy.subject]]);
  });

  it('refuses to file an instance whose logged bytes were cut (over 16 MB): the modality must resend', async () => {
    const raw = readFileSync(path.join(DATA, 'CT_small.dcm')).subarray(0, 4096);
    const id = await recordMessage(db, {
      channel: 'dicom',
      direction: 'in',
      raw,
      sender: 'STORESCU',
      controlId: '1.2.826.0.1.3680043.8.498.4242.77',
      messageType: 'C-STORE',
      status: 'held',
      holdKind: 'identity-conflict',
      error: `Study Instance UID ${STUDY} already belongs to a study of another patient, Patient ID PAT-A (issuer HOSP); refused and held for review (not stored, nothing changed) (first 4096 of 20000000 bytes kept)`,
      ack: '0xc001',
    });
    const r = await resolve(id, { action: 'file-as-new' });
    expect(r.status).toBe(409);
    expect(r.body.error).toMatch(/only the first 4096 of its 20000000 bytes were kept.*resent/);
    expect((await listMessages(db, { channel: 'dicom', status: 'held', controlId: '1.2.826.0.1.3680043.8.498.4242.77' })).map((m) => m.id)).toEqual([id]);
  });

  it('rejects a held instance with a note, audited; nothing changes', async () => {
    const [held] = await listMessages(db, { channel: 'dicom', status: 'held', controlId: `${SERIES}.4` });
    const deps = { db, repo: server.runtime.repo };
    const done = await resolveHeldMessage(deps, held!.id, { action: 'reject', who: 'Practitioner/op1', note: 'wrong patient selected at the CT; corrected there and resent' });
    expect(done).toMatchObject({ status: 'error', holdKind: 'identity-conflict' });
    expect(done.resolution).toMatch(/^rejected by Practitioner\/op1 .*corrected there/);
    expect(await study(STUDY)).toMatchObject({ patient_id: 'PAT-A' });
    expect(await sops(STUDY)).toEqual([`${SERIES}.1`, `${SERIES}.3`]);
  });
});
