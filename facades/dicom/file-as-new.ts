/**
 * "File as new" for a DICOM instance held for an identity conflict (its Study, Series or SOP Instance UID already
 * belongs to another patient; see store.ts): the way a PACS reconciles such an instance (Orthanc's /modify with
 * new UIDs), it is stored for ITS OWN patient under coerced UIDs, and the other patient's study stays as it is.
 *
 *  - Study and Series Instance UID are replaced by UIDs derived from (original UID, the instance's patient key):
 *    `2.25.` + a name-based UUID (RFC 9562 version 8, SHA-256). Every instance of one held study resolved for one
 *    patient lands in ONE new study and series, whichever order the operator resolves them in, without a table.
 *  - The SOP Instance UID is kept, unless it is itself already stored elsewhere (then it is derived the same way).
 *  - The original values are kept in the dataset the standard way (PS3.3 C.12.1.1.9): an item of Original
 *    Attributes Sequence (0400,0561) with the replaced UIDs in Modified Attributes Sequence (0400,0550) and
 *    Reason for the Attribute Modification (0400,0565) "COERCE".
 *  - The rewritten Part 10 file goes into the blob store and is indexed by the C-STORE statement, on the
 *    resolver's transaction; its ImagingStudy is written in that transaction too (or, when that fails, by a sync
 *    once the transaction has committed).
 */
import { createHash } from 'node:crypto';
import dcmjs from 'dcmjs';
import { conflict, type Database, type FiledMessage, type Logger, type MessageRecord, type Tx } from '../../src/index.js';
import type { ImagingStudySync } from './imaging-study.js';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, type ParsedHeader, TS, parsePart10Header, str } from './part10.js';
import { patientIdentity, patientKey } from './patient-identity.js';
import { IngestError, type InstanceStore, LOG_RAW_LIMIT, TRUNCATED_LOG_NOTE } from './store.js';

interface DcmjsElement {
  vr: string;
  Value?: unknown[];
}
type DcmjsDict = Record<string, DcmjsElement>;
const { DicomMessage } = dcmjs.data as unknown as {
  DicomMessage: {
    readFile(buffer: ArrayBuffer, options?: Record<string, unknown>): { meta: DcmjsDict; dict: DcmjsDict; write(opts?: Record<string, unknown>): ArrayBuffer };
  };
};

/** What the filing of a held instance uses of the facade. */
export interface FileAsNewDeps {
  db: Database;
  store: InstanceStore;
  sync: ImagingStudySync;
  log: Logger;
}

/**
 * A UID derived from `uid` for the patient `patientKey`: `2.25.` and the decimal value of a UUID (PS3.5 B.2) of
 * RFC 9562's version 8, whose 122 free bits are the first bits of SHA-256(uid, U+001F, patientKey). At most 44
 * characters; the same inputs always give the same UID.
 */
export function derivedUid(uid: string, patientKey: string): string {
  const b = Buffer.from(createHash('sha256').update(`${uid}\u001f${patientKey}`).digest().subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x80; // version 8
  b[8] = (b[8]! & 0x3f) | 0x80; // variant 10
  return `2.25.${BigInt(`0x${b.toString('hex')}`).toString(10)}`;
}

export interface UidCoercion {
  studyUid: { from: string; to: string };
  seriesUid: { from: string; to: string };
  sopUid: { from: string; to: string };
}

/** DICOM DT of `d` in UTC, with its offset: YYYYMMDDHHMMSS.FFFFFF+0000. */
function dicomDateTimeUtc(d: Date): string {
  const iso = d.toISOString(); // 2024-05-01T12:34:56.789Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}.${iso.slice(20, 23)}000+0000`;
}

/**
 * Rewrites a Part 10 instance with new Study/Series/SOP Instance UIDs (dcmjs), recording the replaced values in
 * Original Attributes Sequence (0400,0561), reason COERCE. The file meta follows (Media Storage SOP Instance UID,
 * this implementation as writer); a deflated dataset is written as Explicit VR Little Endian. dcmjs writes text
 * as UTF-8 (Specific Character Set ISO_IR 192) and sequences with undefined length: the values are the same.
 */
export function coerceUids(raw: Buffer, c: UidCoercion, how: { at: Date; source: string }): Buffer {
  const ab = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length) as ArrayBuffer;
  const file = DicomMessage.readFile(ab, { ignoreErrors: false, untilTag: null, includeUntilTagValue: false, noCopy: false, forceStoreRaw: false });
  const ds = file.dict;
  const modified: DcmjsDict = {};
  const set = (tag: string, u: { from: string; to: string }) => {
    if (u.from === u.to) return;
    modified[tag] = { vr: 'UI', Value: [u.from] };
    ds[tag] = { vr: 'UI', Value: [u.to] };
  };
  set('0020000D', c.studyUid);
  set('0020000E', c.seriesUid);
  set('00080018', c.sopUid);
  const item: DcmjsDict = {
    '04000550': { vr: 'SQ', Value: [modified] },
    '04000562': { vr: 'DT', Value: [dicomDateTimeUtc(how.at)] },
    '04000563': { vr: 'LO', Value: ['CONFLUX'] },
    '04000564': { vr: 'LO', Value: how.source ? [how.source.slice(0, 64)] : [] },
    '04000565': { vr: 'CS', Value: ['COERCE'] },
  };
  // Earlier modifications (by the modality or another archive) stay, this one is added.
  const earlier = ds['04000561']?.Value ?? [];
  ds['04000561'] = { vr: 'SQ', Value: [...earlier, item] };

  const meta = file.meta;
  meta['00020003'] = { vr: 'UI', Value: [c.sopUid.to] };
  meta['00020012'] = { vr: 'UI', Value: [IMPLEMENTATION_CLASS_UID] };
  meta['00020013'] = { vr: 'SH', Value: [IMPLEMENTATION_VERSION] };
  if (String(meta['00020010']?.Value?.[0] ?? '').replace(/\0/g, '').trim() === TS.deflated) meta['00020010'] = { vr: 'UI', Value: [TS.explicitLE] };
  return Buffer.from(file.write({ allowInvalidVRLength: true }));
}

/** Why a logged instance cannot be filed: only its first bytes were kept (it was larger than LOG_RAW_LIMIT). */
function whyNotFileable(message: MessageRecord): string | undefined {
  const cut = TRUNCATED_LOG_NOTE.exec(message.error ?? '');
  if (cut) return `only the first ${cut[1]} of its ${cut[2]} bytes were kept in the message log (instances over ${LOG_RAW_LIMIT / 1024 / 1024} MB are not kept whole)`;
  return undefined;
}

const RESEND = 'reject it, correct the patient or give the study new UIDs at the modality, and have it resent';

/** Files the held instance of `message` (channel dicom or dicomweb) as new, in the resolver's transaction `tx`. */
export async function fileHeldInstanceAsNew(deps: FileAsNewDeps, tx: Tx, message: MessageRecord): Promise<FiledMessage> {
  const why = whyNotFileable(message);
  if (why) throw conflict(`held instance ${message.controlId ?? message.id} cannot be filed as new: ${why}; ${RESEND}`);
  let header: ParsedHeader;
  try {
    header = parsePart10Header(message.raw, true) as ParsedHeader;
  } catch (err) {
    throw conflict(`held instance ${message.controlId ?? message.id} cannot be filed as new: its logged bytes do not parse (${(err as Error).message}); ${RESEND}`);
  }
  const px = header.pixelData;
  if (px && px.length >= 0 && px.valueOffset + px.length > message.raw.length) {
    throw conflict(`held instance ${message.controlId ?? message.id} cannot be filed as new: its logged bytes are truncated (Pixel Data declares ${px.length} bytes, ${Math.max(0, message.raw.length - px.valueOffset)} were kept); ${RESEND}`);
  }
  const ds = header.dataset;
  const from = { study: str(ds, '0020000D'), series: str(ds, '0020000E'), sop: str(ds, '00080018') };
  if (!from.study || !from.series || !from.sop) throw conflict(`held instance ${message.id} names no Study, Series or SOP Instance UID; ${RESEND}`);

  // The patient the instance names, as the identity check defines it (the calling AE is part of it without issuer).
  const sourceAe = message.sender ?? '';
  const key = patientKey(patientIdentity({ patient_id: str(ds, '00100020'), issuer: str(ds, '00100021'), attrs: ds }, deps.store.identity.defaultIssuer, sourceAe), from.study);
  const study = derivedUid(from.study, key);
  const series = derivedUid(from.series, key);
  // The SOP Instance UID stays unless that UID is stored already outside the new study (another patient's, or
  // anywhere else): the instance there is left as it is.
  const elsewhere = (await tx.query<{ study_uid: string }>('SELECT study_uid FROM dicom_instance WHERE sop_uid = $1', [from.sop])).rows[0];
  const sop = elsewhere && elsewhere.study_uid !== study ? derivedUid(from.sop, key) : from.sop;

  let bytes: Buffer;
  try {
    bytes = coerceUids(message.raw, { studyUid: { from: from.study, to: study }, seriesUid: { from: from.series, to: series }, sopUid: { from: from.sop, to: sop } }, { at: new Date(), source: sourceAe });
  } catch (err) {
    throw conflict(`held instance ${message.controlId ?? message.id} cannot be filed as new: it cannot be rewritten (${(err as Error).message}); ${RESEND}`);
  }
  const blob = await deps.store.putBlob(bytes, sop);
  let stored;
  try {
    stored = await deps.store.indexInTransaction(tx, blob, { sourceAe, channel: message.channel === 'dicomweb' ? 'dicomweb' : 'dicom' });
  } catch (err) {
    await deps.store.blobs.delete(blob.key).catch((de: Error) => deps.log.warn(`file-as-new of message ${message.id}: blob ${blob.key} not removed: ${de.message}`));
    if (err instanceof IngestError) throw conflict(`held instance ${message.controlId ?? message.id} cannot be filed as new: ${err.message}`);
    throw err;
  }

  // The ImagingStudy commits with the resolution. When the FHIR side refuses (the sync's own identity guard, a
  // FHIR error), the resolution still files the instance: the study stays dirty and is synced after the commit,
  // where a failure is logged as for any study.
  let synced: { imagingStudy?: string; patient?: string } = {};
  try {
    await tx.query('SAVEPOINT conflux_dicom_file_as_new_sync');
    synced = await deps.sync.syncInTransaction(tx, study);
    await tx.query('RELEASE SAVEPOINT conflux_dicom_file_as_new_sync');
  } catch (err) {
    // When even that fails the transaction is lost: the resolution fails with the error below and nothing is filed.
    await tx.query('ROLLBACK TO SAVEPOINT conflux_dicom_file_as_new_sync');
    deps.log.warn(`file-as-new of message ${message.id}: ImagingStudy of ${study} not written with the resolution (${(err as Error).message}); synced after commit`);
  }
  afterResolution(deps, message.id, { key: blob.key, replacedKey: stored.replacedKey, studyUid: study });

  return {
    // The ImagingStudy, and the new UIDs (as urn:oid: URIs) of study, series and instance, in this order.
    resourceRefs: [...(synced.imagingStudy ? [synced.imagingStudy] : []), `urn:oid:${study}`, `urn:oid:${series}`, `urn:oid:${sop}`],
    patientRefs: synced.patient ? [synced.patient] : message.patientRefs,
  };
}

/**
 * Work that must wait until the resolver's transaction ended, which the filing cannot see: the resolver holds the
 * message row FOR UPDATE until then, so a FOR SHARE read of it returns when it committed or rolled back (PGlite:
 * the query waits for the transaction's connection). Never awaited by the filing (on PGlite that would never end).
 *  - committed (the new blob is indexed): remove the blob of an instance it replaced; sync the study if still dirty;
 *  - rolled back: remove the new blob, which nothing points at.
 */
function afterResolution(deps: FileAsNewDeps, messageId: string, what: { key: string; replacedKey?: string; studyUid: string }): void {
  void (async () => {
    await deps.db.query('SELECT 1 FROM message_log WHERE id = $1 FOR SHARE', [messageId]);
    const indexed = (await deps.db.query('SELECT 1 FROM dicom_instance WHERE blob_key = $1', [what.key])).rows.length > 0;
    if (!indexed) {
      await deps.store.blobs.delete(what.key);
      return;
    }
    if (what.replacedKey && what.replacedKey !== what.key) {
      const used = (await deps.db.query('SELECT 1 FROM dicom_instance WHERE blob_key = $1', [what.replacedKey])).rows.length > 0;
      if (!used) await deps.store.blobs.delete(what.replacedKey);
    }
    const dirty = (await deps.db.query<{ fhir_dirty: boolean }>('SELECT fhir_dirty FROM dicom_study WHERE study_uid = $1', [what.studyUid])).rows[0]?.fhir_dirty;
    if (dirty) await deps.sync.flush([what.studyUid]);
  })().catch((err: Error) => deps.log.warn(`file-as-new of message ${messageId}: clean-up after the resolution failed: ${err.message}`));
}
