/**
 * Identity conflicts (DESIGN principle 5, issue 20): an instance whose Study Instance UID is already another
 * patient's study is refused over real DIMSE (DCMTK storescu) and STOW-RS, held in the message log, and
 * changes nothing of the existing study (index and FHIR ImagingStudy); same-patient resends and new instances
 * keep working, also when two associations race for one new study.
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, ImagingStudy, Patient } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { listMessages } from '../../src/messages/message-log.js';
import { resolveHeldMessage } from '../../src/messages/held-resolution.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { type DicomJson, type ParsedHeader, parsePart10Header, str } from '../../facades/dicom/part10.js';
import { DATA, facadeServices, freePort, run } from './helpers.js';

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

  it('cannot file a held DICOM instance as new (no coercion): the operator rejects it, audited', async () => {
    const [held] = await listMessages(db, { channel: 'dicom', status: 'held', controlId: `${SERIES}.2` });
    const deps = { db, repo: server.runtime.repo };
    await expect(resolveHeldMessage(deps, held!.id, { action: 'file-as-new', who: 'Practitioner/op1' })).rejects.toThrow(/cannot be filed as new/);
    const done = await resolveHeldMessage(deps, held!.id, { action: 'reject', who: 'Practitioner/op1', note: 'wrong patient selected at the CT; corrected there and resent' });
    expect(done).toMatchObject({ status: 'error', holdKind: 'identity-conflict' });
    expect(done.resolution).toMatch(/^rejected by Practitioner\/op1 .*corrected there/);
    expect(await study(STUDY)).toMatchObject({ patient_id: 'PAT-A' });
  });
});
