/**
 * Storing an instance: bytes stream into the blob store as received (Part 10), the header is parsed
 * from the first bytes only, then one database transaction indexes patient/study/series/instance and
 * marks the study for the ImagingStudy sync. Shared by C-STORE and STOW-RS (and, on the resolver's transaction,
 * by filing a held instance as new: file-as-new.ts).
 * One module past the usual size on purpose: the byte sink, the header parse and the one indexing statement with
 * its identity-race retry are the steps of a single ingest and share its types (the blob triple, IngestError,
 * STATUS); the readers of what it stored (query.ts, dicomweb/, dimse/) are elsewhere.
 */
import { randomBytes } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { type BlobStore, type Database, type HoldKind, type Logger, type Queryable, recordMessage, Sql } from '../../src/index.js';
import { type DicomJson, type ParsedHeader, num, parsePart10Header, str } from './part10.js';
import { describeStoredPatient, patientIdentity, patientKey, studyPatientKeySql } from './patient-identity.js';
import { asIngestError, IngestError, STATUS } from './failure.js';

/** How much of an instance is kept in memory for the header parse; files whose header is longer are re-read. */
const PREFIX_BYTES = 256 * 1024;
/** Largest instance whose header is parsed from the whole file (deflated, or non-image objects > PREFIX_BYTES). */
const FULL_PARSE_LIMIT = 256 * 1024 * 1024;
/** Rejected instances up to this size are logged whole; larger ones with their first bytes. */
export const LOG_RAW_LIMIT = 16 * 1024 * 1024;
/** What `logRejected` appends to the logged error when only the first bytes of an instance were kept. */
export const TRUNCATED_LOG_NOTE = /\(first (\d+) of (\d+) bytes kept\)$/;

export { IngestError, STATUS, type IngestErrorDetail } from './failure.js';

/** The instance's Study, Series or SOP Instance UID is another patient's: refused, held for an operator. */
export function identityConflictError(c: { via: 'study' | 'series' | 'instance'; study_uid: string; patient_id: string; issuer: string }, uids: { studyUid: string; seriesUid: string; sopUid: string; sopClassUid: string }): IngestError {
  const other = describeStoredPatient(c.patient_id, c.issuer);
  const what =
    c.via === 'study'
      ? `Study Instance UID ${c.study_uid} already belongs to a study of another patient, ${other}`
      : c.via === 'series'
        ? `Series Instance UID ${uids.seriesUid} already belongs to study ${c.study_uid} of another patient, ${other}`
        : `SOP Instance UID ${uids.sopUid} is already stored in study ${c.study_uid} of another patient, ${other}`;
  // The comment must fit 64 characters: the other patient's ID first (what an operator looks up), then as much
  // of the study UID as fits (its tail, which is what differs between studies of one site).
  const pid = c.patient_id ? `patient ID ${c.patient_id}` : 'an unidentified patient';
  const head = `${c.via === 'study' ? 'Study' : c.via === 'series' ? 'Series' : 'SOP UID'} is ${pid}'s, study `;
  const room = 64 - head.length;
  // ASCII only: LO is in the default character repertoire, and 64 is a count of bytes there.
  const study = c.study_uid.length <= room ? c.study_uid : room > 8 ? `...${c.study_uid.slice(-(room - 3))}` : '';
  return new IngestError(STATUS.identityConflict, `${what}; refused and held for review (not stored, nothing changed)`, {
    comment: (study ? head + study : head.slice(0, -", study ".length)).slice(0, 64),
    holdKind: 'identity-conflict',
    ...uids,
  });
}

export interface StoredInstance {
  studyUid: string;
  seriesUid: string;
  sopUid: string;
  sopClassUid: string;
  transferSyntaxUid: string;
  size: number;
  /** True when an instance with this SOP Instance UID was already stored (a resend). */
  replaced: boolean;
}

export interface IngestOptions {
  sourceAe?: string;
  /** From the C-STORE command: the dataset must carry the same UIDs. */
  expectedSopInstanceUid?: string;
  expectedSopClassUid?: string;
  /** Message-log channel of rejected instances: 'dicom' (C-STORE) or 'dicomweb' (STOW-RS). */
  channel?: 'dicom' | 'dicomweb';
  remoteAddress?: string;
}

const UID = /^[0-9]+(\.[0-9]+)*$/;

const STUDY_TAGS = ['00080005', '00080020', '00080030', '00080050', '00080051', '00080090', '00081030', '00100010', '00100020', '00100021', '00100024', '00100030', '00100040', '0020000D', '00200010', '00080201'];
const SERIES_TAGS = ['00080060', '0020000E', '00200011', '0008103E', '00180015', '00080021', '00080031', '00400244', '00400245', '00400275', '00080070'];

export function pick(ds: DicomJson, tags: string[]): DicomJson {
  const out: DicomJson = {};
  for (const t of tags) if (ds[t]) out[t] = ds[t];
  return out;
}

/**
 * A blob key per received copy: a resend never overwrites the copy the index points at until it commits.
 * One folder per day keeps directories few (a folder per instance cost a mkdir on every C-STORE).
 */
function newBlobKey(sopUid: string): string {
  const safe = UID.test(sopUid) && sopUid.length <= 64 ? sopUid : 'unidentified';
  const day = new Date().toISOString().slice(0, 10).replace(/-/g, '');
  return `dicom/${day}/${safe}.${randomBytes(5).toString('hex')}.dcm`;
}

/** Receives one Part 10 byte stream into the blob store, keeping the first bytes for the header parse. */
export class InstanceSink {
  readonly key: string;
  readonly input: Transform;
  private readonly parts: Buffer[] = [];
  private prefixLength = 0;
  private readonly done: Promise<{ size: number }>;

  constructor(
    private readonly blobs: BlobStore,
    sopUidHint: string,
  ) {
    this.key = newBlobKey(sopUidHint);
    this.input = new Transform({
      // Small instances pass without a backpressure round trip; large ones still pause the sender.
      writableHighWaterMark: 1024 * 1024,
      transform: (chunk: Buffer, _enc, cb) => {
        if (this.prefixLength < PREFIX_BYTES) {
          const take = chunk.subarray(0, PREFIX_BYTES - this.prefixLength);
          // Copy: the network layer may reuse its buffers.
          this.parts.push(Buffer.from(take));
          this.prefixLength += take.length;
        }
        cb(null, chunk);
      },
    });
    this.done = blobs.put(this.key, this.input);
    // Surface write errors through `finish`, never as an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /** Waits until every byte is in the blob store. */
  async finish(): Promise<{ key: string; size: number; prefix: Buffer }> {
    const { size } = await this.done;
    return { key: this.key, size, prefix: Buffer.concat(this.parts) };
  }

  /** Drops a transfer that will not be stored (the association failed mid-way); its write error, if any, is moot. */
  async discard(): Promise<void> {
    await this.done.catch(() => undefined);
    // Best effort: a blob no index row points at is never served, only wasted space.
    await this.blobs.delete(this.key).catch(() => undefined);
  }
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

export interface IndexedInstanceRow {
  sop_uid: string;
  series_uid: string;
  study_uid: string;
  sop_class_uid: string;
  instance_number: number | null;
  transfer_syntax: string;
  blob_key: string;
  size: string | number;
  pixel_offset: string | number | null;
  pixel_length: string | number | null;
  frames: number | null;
  metadata: DicomJson;
  /** The calling AE title of a C-STORE ('' for STOW-RS). */
  source_ae: string;
}

/** Text of the error the index statement raises to undo itself when it lost a race (see INDEX_SQL). */
const RACED = 'conflux: identity check raced';

/**
 * Did the index statement undo itself because it lost a race? Checked by what the statement raises, the cast of
 * RACED to int (SQLSTATE 22P02, invalid_text_representation), never by any other failure. The cast stays: it is the
 * only way plain SQL can roll back its own data-modifying CTEs, and wrapping the statement in BEGIN/COMMIT instead
 * would add two round trips to every C-STORE.
 */
function lostRace(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '22P02' && typeof e.message === 'string' && e.message.includes(RACED);
}

interface Conflict {
  via: 'study' | 'series' | 'instance';
  study_uid: string;
  patient_id: string;
  issuer: string;
}

interface IndexRow {
  old_key: string | null;
  old_study: string | null;
  old_series: string | null;
  /** JSON of a `Conflict` when the instance names another patient than its UIDs already belong to. */
  conflict: string | null;
}

/**
 * Indexes one instance in one statement (data-modifying CTEs share a snapshot and commit together): one round
 * trip per instance instead of six, which is most of the C-STORE cost on an embedded database.
 *
 * Identity (docs/design.md principle 5): `owner` lists the studies this instance's UIDs already belong to (its study,
 * the study of its series, the study a resent SOP Instance UID was in) with each one's patient key. When any is
 * another patient's, nothing is written and the statement returns that study as `conflict`. The check sees the
 * statement's snapshot only; a row another association committed after it is caught by the ON CONFLICT ... WHERE
 * clauses, which update only rows this statement saw and checked. When one of them declines, the final SELECT
 * fails on purpose (a cast of a text that names RACED), which rolls back every CTE of the statement, and the
 * caller runs it again: then the row is in the snapshot and checked like any other.
 */
const INDEX_SQL = `WITH prev AS (SELECT blob_key, study_uid, series_uid FROM dicom_instance WHERE sop_uid = $1 FOR UPDATE),
 owner AS (
   SELECT s.study_uid, s.patient_id, s.issuer, ${studyPatientKeySql('$33')} AS patient_key,
          CASE WHEN s.study_uid = $3 THEN 'study'
               WHEN s.study_uid IN (SELECT study_uid FROM dicom_series WHERE series_uid = $2) THEN 'series' ELSE 'instance' END AS via
     FROM dicom_study s
    WHERE s.study_uid = $3
       OR s.study_uid IN (SELECT study_uid FROM dicom_series WHERE series_uid = $2)
       OR s.study_uid IN (SELECT study_uid FROM prev)),
 conflict AS (SELECT via, study_uid, patient_id, issuer FROM owner WHERE patient_key <> $32 ORDER BY via = 'study' DESC, via = 'series' DESC LIMIT 1),
 st AS (
   INSERT INTO dicom_study (study_uid, patient_id, issuer, patient_name, patient_birth_date, patient_sex, study_date, study_time,
                            accession, study_id, description, referring_physician, attrs)
   SELECT $3, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25::json WHERE NOT EXISTS (SELECT 1 FROM conflict)
   ON CONFLICT (study_uid) DO UPDATE SET
     patient_id = EXCLUDED.patient_id, issuer = EXCLUDED.issuer, patient_name = EXCLUDED.patient_name,
     patient_birth_date = EXCLUDED.patient_birth_date, patient_sex = EXCLUDED.patient_sex,
     study_date = EXCLUDED.study_date, study_time = EXCLUDED.study_time, accession = EXCLUDED.accession,
     study_id = EXCLUDED.study_id, description = EXCLUDED.description, referring_physician = EXCLUDED.referring_physician,
     attrs = EXCLUDED.attrs, fhir_dirty = true, change_seq = dicom_study.change_seq + 1, updated_at = now()
     WHERE EXISTS (SELECT 1 FROM owner o WHERE o.study_uid = dicom_study.study_uid)
   RETURNING 1),
 se AS (
   INSERT INTO dicom_series (series_uid, study_uid, modality, series_number, description, body_part, series_date, attrs)
   SELECT $2, $3, $26, $27, $28, $29, $30, $31::json WHERE NOT EXISTS (SELECT 1 FROM conflict)
   ON CONFLICT (series_uid) DO UPDATE SET study_uid = EXCLUDED.study_uid, modality = EXCLUDED.modality, series_number = EXCLUDED.series_number,
     description = EXCLUDED.description, body_part = EXCLUDED.body_part, series_date = EXCLUDED.series_date, attrs = EXCLUDED.attrs
     WHERE EXISTS (SELECT 1 FROM owner o WHERE o.study_uid = dicom_series.study_uid)
   RETURNING 1),
 ins AS (
   INSERT INTO dicom_instance (sop_uid, series_uid, study_uid, sop_class_uid, instance_number, transfer_syntax, blob_key, size,
                               pixel_offset, pixel_length, frames, metadata, source_ae)
   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::json, $13 WHERE NOT EXISTS (SELECT 1 FROM conflict)
   ON CONFLICT (sop_uid) DO UPDATE SET series_uid = EXCLUDED.series_uid, study_uid = EXCLUDED.study_uid,
     sop_class_uid = EXCLUDED.sop_class_uid, instance_number = EXCLUDED.instance_number, transfer_syntax = EXCLUDED.transfer_syntax,
     blob_key = EXCLUDED.blob_key, size = EXCLUDED.size, pixel_offset = EXCLUDED.pixel_offset, pixel_length = EXCLUDED.pixel_length,
     frames = EXCLUDED.frames, metadata = EXCLUDED.metadata, source_ae = EXCLUDED.source_ae, received_at = now()
     WHERE EXISTS (SELECT 1 FROM owner o WHERE o.study_uid = dicom_instance.study_uid)
   RETURNING 1),
 written AS (SELECT (SELECT count(*) FROM st) + (SELECT count(*) FROM se) + (SELECT count(*) FROM ins) AS n)
 SELECT (SELECT blob_key FROM prev) AS old_key, (SELECT study_uid FROM prev) AS old_study, (SELECT series_uid FROM prev) AS old_series,
        (SELECT row_to_json(c)::text FROM conflict c) AS conflict,
        CASE WHEN NOT EXISTS (SELECT 1 FROM conflict) AND (SELECT n FROM written) <> 3
             THEN ('${RACED} (' || (SELECT n FROM written) || ' of 3 rows written)')::int END AS raced`;

/** How many times the index statement is re-run when another association changed the same UIDs meanwhile. */
const RACE_RETRIES = 3;

export class InstanceStore {
  constructor(
    readonly db: Database,
    readonly blobs: BlobStore,
    /** DICOM_DEFAULT_ISSUER: part of "same patient" for a Patient ID that comes without an issuer. */
    readonly identity: { defaultIssuer?: string } = {},
    private readonly log: Pick<Logger, 'warn' | 'error'> = { warn: (m) => console.warn(`[dicom] ${m}`), error: (m) => console.error(`[dicom] ${m}`) },
  ) {}

  /** Indexes a received blob; on any failure the blob is removed and an IngestError explains why. */
  async ingest(blob: { key: string; size: number; prefix: Buffer }, opts: IngestOptions = {}): Promise<StoredInstance> {
    try {
      return await this.ingestUnsafe(blob, opts);
    } catch (err) {
      const e = asIngestError(err);
      // The sender is answered with `e` whatever happens here; a failure to log or clean up is the operator's to know.
      await this.logRejected(blob, opts, e).catch((le: Error) => this.log.error(`rejected instance ${e.detail.sopUid ?? blob.key} not logged: ${le.message}`));
      await this.blobs.delete(blob.key).catch((de: Error) => this.log.warn(`blob ${blob.key} of a rejected instance not removed: ${de.message}`));
      throw e;
    }
  }

  /** Nothing is dropped silently (principle 4): a rejected instance goes to the message log with its bytes. */
  private async logRejected(blob: { key: string; size: number; prefix: Buffer }, opts: IngestOptions, err: IngestError): Promise<void> {
    let raw = blob.prefix;
    let note = '';
    if (blob.size > blob.prefix.length) {
      if (blob.size <= LOG_RAW_LIMIT) raw = await readAll(await this.blobs.get(blob.key));
      else note = ` (first ${blob.prefix.length} of ${blob.size} bytes kept)`;
    }
    await recordMessage(this.db, {
      channel: opts.channel ?? 'dicom',
      direction: 'in',
      raw,
      sender: opts.sourceAe || null,
      remoteAddress: opts.remoteAddress ?? null,
      controlId: opts.expectedSopInstanceUid ?? err.detail.sopUid ?? null,
      messageType: opts.channel === 'dicomweb' ? 'STOW-RS' : 'C-STORE',
      status: err.detail.holdKind ? 'held' : 'error',
      holdKind: err.detail.holdKind ?? null,
      error: `${err.message}${note}`,
      ack: `0x${err.dimseStatus.toString(16).padStart(4, '0')}`,
    });
  }

  private async ingestUnsafe(blob: { key: string; size: number; prefix: Buffer }, opts: IngestOptions): Promise<StoredInstance> {
    const { replacedKey, ...stored } = await this.index(this.db, false, blob, opts);
    if (replacedKey && replacedKey !== blob.key) {
      // The instance is stored; the replaced blob is only space no row points at any more.
      await this.blobs.delete(replacedKey).catch((err: Error) => this.log.warn(`blob ${replacedKey} of a replaced instance not removed: ${err.message}`));
    }
    return stored;
  }

  /**
   * Writes a whole Part 10 instance built here (a coerced held instance) into the blob store, as a C-STORE's
   * bytes would be: the result is what `indexInTransaction` (or `ingest`) takes.
   */
  async putBlob(bytes: Buffer, sopUidHint: string): Promise<{ key: string; size: number; prefix: Buffer }> {
    const key = newBlobKey(sopUidHint);
    const { size } = await this.blobs.put(key, Readable.from([bytes]));
    return { key, size, prefix: bytes };
  }

  /**
   * Indexes a blob that is already in the store on the caller's transaction `tx`, with the same checks and the
   * same statement as a C-STORE (identity conflicts throw the same IngestError). Unlike `ingest`, nothing is
   * logged and no blob is deleted: on failure the caller removes `blob`; the blob of an instance this one
   * replaced (`replacedKey`) is the caller's to remove once `tx` committed. A race with another association is
   * retried from a savepoint, so `tx` stays usable.
   */
  async indexInTransaction(tx: Queryable, blob: { key: string; size: number; prefix: Buffer }, opts: IngestOptions = {}): Promise<StoredInstance & { replacedKey?: string }> {
    return this.index(tx, true, blob, opts);
  }

  /** Parses, checks and indexes a received blob on `q` (`inTx`: the caller's open transaction). */
  private async index(q: Queryable, inTx: boolean, blob: { key: string; size: number; prefix: Buffer }, opts: IngestOptions): Promise<StoredInstance & { replacedKey?: string }> {
    let parsed: ParsedHeader | 'need-more' = parsePart10Header(blob.prefix, blob.prefix.length >= blob.size);
    if (parsed === 'need-more') {
      if (blob.size > FULL_PARSE_LIMIT) throw new IngestError(STATUS.cannotUnderstand, `the header of this ${blob.size}-byte instance is larger than ${PREFIX_BYTES} bytes and the instance too large to parse whole`);
      parsed = parsePart10Header(await readAll(await this.blobs.get(blob.key)), true) as ParsedHeader;
    }
    const ds = parsed.dataset;
    const studyUid = str(ds, '0020000D');
    const seriesUid = str(ds, '0020000E');
    const sopUid = str(ds, '00080018');
    const sopClassUid = str(ds, '00080016') || str(parsed.meta, '00020002');
    const missing = [
      [studyUid, 'Study Instance UID (0020,000D)'],
      [seriesUid, 'Series Instance UID (0020,000E)'],
      [sopUid, 'SOP Instance UID (0008,0018)'],
      [sopClassUid, 'SOP Class UID (0008,0016)'],
    ].filter(([v]) => !v);
    if (missing.length) throw new IngestError(STATUS.cannotUnderstand, `missing ${missing.map(([, n]) => n).join(', ')}`);
    for (const [v, n] of [
      [studyUid, 'Study Instance UID'],
      [seriesUid, 'Series Instance UID'],
      [sopUid, 'SOP Instance UID'],
    ]) {
      if (!UID.test(v) || v.length > 64) throw new IngestError(STATUS.cannotUnderstand, `${n} "${v}" is not a valid UID`);
    }
    if (opts.expectedSopInstanceUid && opts.expectedSopInstanceUid !== sopUid) {
      throw new IngestError(STATUS.sopClassMismatch, `the dataset's SOP Instance UID ${sopUid} differs from the command's ${opts.expectedSopInstanceUid}`);
    }
    if (opts.expectedSopClassUid && opts.expectedSopClassUid !== sopClassUid) {
      throw new IngestError(STATUS.sopClassMismatch, `the dataset's SOP Class UID ${sopClassUid} differs from the command's ${opts.expectedSopClassUid}`);
    }
    const px = parsed.pixelData;
    if (px && px.length >= 0 && px.valueOffset + px.length > blob.size) {
      throw new IngestError(STATUS.cannotUnderstand, `truncated: Pixel Data declares ${px.length} bytes but only ${Math.max(0, blob.size - px.valueOffset)} follow`);
    }
    const uncompressed = px && px.length >= 0;
    const frames = uncompressed ? (num(ds, '00280008') ?? 1) : null;

    // The patient this instance names, as "same patient" is defined in patient-identity.ts.
    const incomingKey = patientKey(patientIdentity({ patient_id: str(ds, '00100020'), issuer: str(ds, '00100021'), attrs: ds }, this.identity.defaultIssuer, opts.sourceAe ?? ''), studyUid);
    const params = [
      sopUid,
      seriesUid,
      studyUid,
      sopClassUid,
      intOrNull(num(ds, '00200013')),
      parsed.transferSyntaxUid,
      blob.key,
      blob.size,
      uncompressed ? px.valueOffset : null,
      uncompressed ? px.length : null,
      frames,
      JSON.stringify(ds),
      opts.sourceAe ?? '',
      str(ds, '00100020'),
      str(ds, '00100021'),
      str(ds, '00100010'),
      str(ds, '00100030'),
      str(ds, '00100040'),
      str(ds, '00080020'),
      str(ds, '00080030'),
      str(ds, '00080050'),
      str(ds, '00200010'),
      str(ds, '00081030'),
      str(ds, '00080090'),
      JSON.stringify(pick(ds, STUDY_TAGS)),
      str(ds, '00080060'),
      intOrNull(num(ds, '00200011')),
      str(ds, '0008103E'),
      str(ds, '00180015'),
      str(ds, '00080021'),
      JSON.stringify(pick(ds, SERIES_TAGS)),
      incomingKey,
      this.identity.defaultIssuer ?? null,
    ];
    let r;
    for (let attempt = 1; ; attempt++) {
      try {
        if (inTx) {
          // In the caller's transaction a failed statement would abort all of it: the savepoint keeps the retry possible.
          await q.query('SAVEPOINT conflux_dicom_index');
          r = await q.query<IndexRow>(INDEX_SQL, params);
          await q.query('RELEASE SAVEPOINT conflux_dicom_index');
        } else {
          r = await q.query<IndexRow>(INDEX_SQL, params);
        }
        break;
      } catch (err) {
        // (A savepoint that cannot be restored leaves the transaction failed: the original error says why.)
        if (inTx) await q.query('ROLLBACK TO SAVEPOINT conflux_dicom_index').catch(() => undefined);
        // Another association wrote one of these UIDs after this statement's snapshot was taken: nothing of
        // this statement was kept; run it again on a fresh snapshot, which sees (and checks) that row.
        if (!lostRace(err)) throw err;
        if (attempt < RACE_RETRIES) continue;
        // Out of Resources tells the sender to retry later, which is what it should do.
        throw new IngestError(STATUS.outOfResources, `instance ${sopUid} not stored: other associations kept changing its study, series or instance (${RACE_RETRIES} attempts); send it again`, {
          comment: 'concurrent changes to this study; send it again',
          sopUid,
          sopClassUid,
        });
      }
    }
    const old = r.rows[0];
    if (old.conflict) throw identityConflictError(JSON.parse(old.conflict) as Conflict, { studyUid, seriesUid, sopUid, sopClassUid });
    if (old.old_study && (old.old_study !== studyUid || old.old_series !== seriesUid)) {
      // A resend that moved the instance: the old study must be re-synced, an emptied series dropped.
      const moved = async (tx: Queryable) => {
        await tx.query('DELETE FROM dicom_series s WHERE series_uid = $1 AND NOT EXISTS (SELECT 1 FROM dicom_instance i WHERE i.series_uid = s.series_uid)', [old.old_series]);
        await tx.query('UPDATE dicom_study SET fhir_dirty = true, change_seq = change_seq + 1 WHERE study_uid = $1', [old.old_study]);
      };
      if (inTx) await moved(q);
      else await this.db.transaction(moved);
    }
    const replacedKey = old.old_key ?? undefined;
    const replaced = !!old.old_key;
    return { studyUid, seriesUid, sopUid, sopClassUid, transferSyntaxUid: parsed.transferSyntaxUid, size: blob.size, replaced, replacedKey };
  }

  /** Receives and indexes one whole Part 10 stream (STOW-RS parts, tests). */
  async storeStream(body: Readable, opts: IngestOptions = {}): Promise<StoredInstance> {
    const sink = new InstanceSink(this.blobs, opts.expectedSopInstanceUid ?? 'stow');
    body.on('error', (err) => sink.input.destroy(err));
    body.pipe(sink.input);
    let received;
    try {
      received = await sink.finish();
    } catch (err) {
      await sink.discard();
      throw new IngestError(STATUS.processingFailure, `instance could not be received: ${(err as Error).message}`);
    }
    return this.ingest(received, opts);
  }

  async instance(sopUid: string): Promise<IndexedInstanceRow | undefined> {
    const r = await this.db.query<IndexedInstanceRow>('SELECT * FROM dicom_instance WHERE sop_uid = $1', [sopUid]);
    return r.rows[0];
  }

  /** Instances of a study / series / one instance, in series then instance order. */
  async instances(filter: { studyUid?: string; seriesUid?: string; sopUid?: string }): Promise<IndexedInstanceRow[]> {
    const where: string[] = [];
    const sql = new Sql();
    if (filter.studyUid) where.push(`i.study_uid = ${sql.p(filter.studyUid)}`);
    if (filter.seriesUid) where.push(`i.series_uid = ${sql.p(filter.seriesUid)}`);
    if (filter.sopUid) where.push(`i.sop_uid = ${sql.p(filter.sopUid)}`);
    const r = await this.db.query<IndexedInstanceRow>(
      `SELECT i.* FROM dicom_instance i JOIN dicom_series s ON s.series_uid = i.series_uid
        ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY s.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_uid`,
      sql.params,
    );
    return r.rows;
  }
}

function intOrNull(n: number | undefined): number | null {
  return n !== undefined && Number.isInteger(n) && Math.abs(n) < 2 ** 31 ? n : null;
}
