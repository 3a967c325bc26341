/**
 * DICOMweb at /dicomweb (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the same index and blob store as
 * DIMSE. Every request is authenticated by the runtime and authorised as ImagingStudy read (QIDO, WADO)
 * or create (STOW); a study is visible only when its ImagingStudy is (patient-scoped tokens).
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { ImagingStudy } from '@medplum/fhirtypes';
import { type AccessPolicy, badRequest, FhirError, notFound, type Runtime } from '../../../src/index.js';
import { type DicomJson, num, str, tagOf, vrOf } from '../part10.js';
import { project } from '../matching.js';
import { findLevel, type Level } from '../query.js';
import type { DicomServices } from '../services.js';
import { dimseFailure } from '../failure.js';
import { IngestError, STATUS, type StoredInstance } from '../store.js';
import { boundaryOf, MultipartWriter, parseMultipart } from './multipart.js';

const DICOM_JSON = 'application/dicom+json';

/** Default QIDO-RS return attributes per level (PS3.18 Table 6.7.1-2), beyond the query keys. */
const DEFAULT_FIELDS: Record<Exclude<Level, 'PATIENT'>, string[]> = {
  STUDY: ['00080005', '00080020', '00080030', '00080050', '00080056', '00080061', '00080090', '00081190', '00100010', '00100020', '00100030', '00100040', '0020000D', '00200010', '00201206', '00201208', '00081030'],
  SERIES: ['00080005', '00080060', '0008103E', '00080056', '00081190', '0020000E', '00200011', '00201209', '00400244', '00400245', '0020000D'],
  IMAGE: ['00080005', '00080016', '00080018', '00080056', '00081190', '00200013', '00280010', '00280011', '00280100', '00280008', '0020000E', '0020000D', '00083002'],
};

type Handler = (req: Request, res: Response, policy: AccessPolicy) => Promise<void>;

export function dicomwebRouter(rt: Runtime, svc: DicomServices, base: () => string): express.Router {
  const router = express.Router();

  const wrap = (interaction: 'read' | 'create', fn: Handler) => async (req: Request, res: Response, next: NextFunction) => {
    try {
      const policy = await rt.authenticate(req);
      policy.assertType('ImagingStudy', interaction);
      await fn(req, res, policy);
    } catch (err) {
      next(err);
    }
  };

  /** May the caller see this study? Asks the policy about its ImagingStudy (created by the sync). */
  const visible = async (policy: AccessPolicy, studyUid: string): Promise<boolean> => {
    // Callers limited neither to a patient nor by scope criteria on ImagingStudy (system, AUTH=off,
    // user/ImagingStudy.rs) need no per-study check; the others are asked about the study's ImagingStudy.
    const sa = policy.searchAccess();
    const unrestricted = !sa || (!sa.patientCompartments?.length && !sa.typeCriteria?.ImagingStudy);
    const r = await svc.db.query<{ imaging_study_id: string | null }>('SELECT imaging_study_id FROM dicom_study WHERE study_uid = $1', [studyUid]);
    const row = r.rows[0];
    if (!row) return false;
    if (unrestricted) return true;
    if (!row.imaging_study_id) await svc.sync.flush([studyUid]);
    const id = row.imaging_study_id ?? (await svc.db.query<{ imaging_study_id: string | null }>('SELECT imaging_study_id FROM dicom_study WHERE study_uid = $1', [studyUid])).rows[0]?.imaging_study_id;
    if (!id) return false;
    try {
      policy.assertResource(await rt.repo.readResource<ImagingStudy>('ImagingStudy', id), 'read');
      return true;
    } catch (err) {
      if (err instanceof FhirError && (err.status === 403 || err.status === 404 || err.status === 410)) return false;
      throw err;
    }
  };
  const requireStudy = async (policy: AccessPolicy, studyUid: string) => {
    if (!(await visible(policy, studyUid))) throw notFound(`study ${studyUid} is not known`);
  };

  // ---- STOW-RS -------------------------------------------------------------------------------------
  const stow: Handler = async (req, res) => {
    const type = req.headers['content-type'] ?? '';
    if (!/^multipart\/related/i.test(type)) throw FhirError.of(415, 'not-supported', 'STOW-RS needs Content-Type multipart/related; type="application/dicom"');
    const boundary = boundaryOf(type);
    if (!boundary) throw badRequest('the multipart/related Content-Type has no boundary parameter');
    const pathStudy = req.params.study as string | undefined;
    const stored: StoredInstance[] = [];
    const failed: DicomJson[] = [];
    await parseMultipart(req as AsyncIterable<Buffer>, boundary, async (headers, body) => {
      const partType = (headers['content-type'] ?? 'application/dicom').split(';')[0].trim().toLowerCase();
      if (partType !== 'application/dicom') {
        body.resume();
        failed.push(failure('', '', STATUS.sopClassNotSupported, `part of type ${partType} is not supported (only application/dicom)`));
        return;
      }
      try {
        const s = await svc.store.storeStream(body, { channel: 'dicomweb', remoteAddress: req.socket.remoteAddress });
        if (pathStudy && s.studyUid !== pathStudy) {
          failed.push(failure(s.sopClassUid, s.sopUid, 0xa900, `instance belongs to study ${s.studyUid}, not ${pathStudy}`));
          return;
        }
        stored.push(s);
      } catch (err) {
        body.resume();
        const f = dimseFailure(err, STATUS.processingFailure);
        const detail = err instanceof IngestError ? err.detail : {};
        failed.push(failure(detail.sopClassUid ?? '', detail.sopUid ?? '', f.status, f.comment));
      }
    }).catch((err: Error) => {
      if (stored.length === 0 && failed.length === 0) throw badRequest(`STOW-RS body is not valid multipart/related: ${err.message}`);
      failed.push(failure('', '', STATUS.processingFailure, err.message));
    });
    const studies = [...new Set(stored.map((s) => s.studyUid))];
    // The response describes committed data, so the FHIR ImagingStudy is current when it is sent.
    await svc.sync.flush(studies);
    const out: DicomJson = {};
    if (studies.length === 1) out['00081190'] = { vr: 'UR', Value: [`${base()}/studies/${studies[0]}`] };
    if (stored.length) {
      out['00081199'] = {
        vr: 'SQ',
        Value: stored.map((s) => ({
          '00081150': { vr: 'UI', Value: [s.sopClassUid] },
          '00081155': { vr: 'UI', Value: [s.sopUid] },
          '00081190': { vr: 'UR', Value: [`${base()}/studies/${s.studyUid}/series/${s.seriesUid}/instances/${s.sopUid}`] },
        })),
      };
    }
    if (failed.length) out['00081198'] = { vr: 'SQ', Value: failed };
    const status = failed.length === 0 ? 200 : stored.length === 0 ? 409 : 202;
    res.status(status).type(DICOM_JSON).send(JSON.stringify(out));
  };
  router.post('/studies', wrap('create', stow));
  router.post('/studies/:study', wrap('create', stow));

  // ---- QIDO-RS -------------------------------------------------------------------------------------
  const qido =
    (level: Exclude<Level, 'PATIENT'>): Handler =>
    async (req, res, policy) => {
      const query: DicomJson = {};
      let limit = 100;
      let offset = 0;
      let fuzzy = false;
      const include = new Set<string>();
      let includeAll = false;
      for (const [k, raw] of new URL(req.originalUrl, 'http://x').searchParams) {
        if (k === 'limit') limit = intParam(k, raw);
        else if (k === 'offset') offset = intParam(k, raw);
        else if (k === 'fuzzymatching') fuzzy = raw === 'true';
        else if (k === 'includefield') {
          for (const f of raw.split(',')) {
            if (f === 'all') includeAll = true;
            else {
              const t = tagOf(f.trim());
              if (!t) throw badRequest(`includefield "${f}" is not a DICOM keyword or tag`);
              include.add(t);
            }
          }
        } else {
          const t = tagOf(k);
          if (!t) throw badRequest(`query parameter "${k}" is not a DICOM keyword or tag`);
          const vr = vrOf(t);
          query[t] = { vr, Value: raw === '' ? [] : vr === 'PN' ? [{ Alphabetic: raw }] : raw.split('\\') };
        }
      }
      if (req.params.study) query['0020000D'] = { vr: 'UI', Value: [req.params.study] };
      if (req.params.series) query['0020000E'] = { vr: 'UI', Value: [req.params.series] };
      if (req.params.study) await requireStudy(policy, req.params.study as string);
      const results: DicomJson[] = [];
      let skip = offset;
      let scanOffset = 0;
      // Visibility is per study: page through matches until `limit` visible ones are found.
      for (;;) {
        const batch = await findLevel(svc.db, level, query, { fuzzy, limit: 500, offset: scanOffset, retrieveBase: base() });
        scanOffset += batch.length;
        for (const c of batch) {
          if (!req.params.study && !(await visibleCached(policy, str(c, '0020000D')))) continue;
          if (skip > 0) {
            skip--;
            continue;
          }
          results.push(c);
          if (results.length >= limit) break;
        }
        if (batch.length < 500 || results.length >= limit) break;
      }
      const fields = new Set([...DEFAULT_FIELDS[level], ...Object.keys(query), ...include]);
      const shape = (c: DicomJson): DicomJson => {
        if (includeAll) return c;
        const keys: DicomJson = {};
        for (const t of [...fields].sort()) keys[t] = c[t] ?? { vr: vrOf(t) };
        const out = project(keys, c);
        for (const t of Object.keys(out)) if (!c[t] && !Object.keys(query).includes(t)) delete out[t];
        return out;
      };
      if (results.length === 0) {
        res.status(204).end();
        return;
      }
      res.status(200).type(DICOM_JSON).send(JSON.stringify(results.map(shape)));
    };
  const seen = new WeakMap<AccessPolicy, Map<string, boolean>>();
  const visibleCached = async (policy: AccessPolicy, studyUid: string) => {
    let m = seen.get(policy);
    if (!m) seen.set(policy, (m = new Map()));
    if (!m.has(studyUid)) m.set(studyUid, await visible(policy, studyUid));
    return m.get(studyUid) as boolean;
  };
  router.get('/studies', wrap('read', qido('STUDY')));
  router.get('/series', wrap('read', qido('SERIES')));
  router.get('/instances', wrap('read', qido('IMAGE')));
  router.get('/studies/:study/series', wrap('read', qido('SERIES')));
  router.get('/studies/:study/instances', wrap('read', qido('IMAGE')));
  router.get('/studies/:study/series/:series/instances', wrap('read', qido('IMAGE')));

  // ---- WADO-RS -------------------------------------------------------------------------------------
  const selection = (req: Request) => ({ studyUid: req.params.study as string, seriesUid: req.params.series as string | undefined, sopUid: req.params.instance as string | undefined });

  const retrieve: Handler = async (req, res, policy) => {
    const sel = selection(req);
    await requireStudy(policy, sel.studyUid);
    const accept = String(req.headers.accept ?? '*/*');
    if (!/(\*\/\*|multipart\/related|application\/dicom)/i.test(accept) || /transfer-syntax=(?!\*)/i.test(accept)) {
      // Instances are served as stored; a specific transfer syntax other than "*" would need transcoding.
      if (!/transfer-syntax=\*/i.test(accept) && /transfer-syntax=/i.test(accept)) throw FhirError.of(406, 'not-supported', 'instances are served in their stored transfer syntax only (use transfer-syntax=*)');
      if (!/(\*\/\*|multipart\/related|application\/dicom)/i.test(accept)) throw FhirError.of(406, 'not-supported', `cannot serve ${accept}: use multipart/related; type="application/dicom"`);
    }
    const rows = await svc.store.instances(sel);
    if (rows.length === 0) throw notFound('no instance matches');
    const w = new MultipartWriter(res);
    res.status(200).setHeader('Content-Type', w.contentType('application/dicom'));
    for (const r of rows) await w.part(`application/dicom; transfer-syntax=${r.transfer_syntax}`, await svc.store.blobs.get(r.blob_key));
    await w.end();
  };
  router.get('/studies/:study', wrap('read', retrieve));
  router.get('/studies/:study/series/:series', wrap('read', retrieve));
  router.get('/studies/:study/series/:series/instances/:instance', wrap('read', retrieve));

  const metadata: Handler = async (req, res, policy) => {
    const sel = selection(req);
    await requireStudy(policy, sel.studyUid);
    const rows = await svc.store.instances(sel);
    if (rows.length === 0) throw notFound('no instance matches');
    res.status(200).type(DICOM_JSON);
    res.write('[');
    rows.forEach((r, i) => {
      const md: DicomJson = { ...r.metadata, '00083002': { vr: 'UI', Value: [r.transfer_syntax] } };
      res.write((i ? ',' : '') + JSON.stringify(md));
    });
    res.end(']');
  };
  router.get('/studies/:study/metadata', wrap('read', metadata));
  router.get('/studies/:study/series/:series/metadata', wrap('read', metadata));
  router.get('/studies/:study/series/:series/instances/:instance/metadata', wrap('read', metadata));

  router.get(
    '/studies/:study/series/:series/instances/:instance/frames/:frames',
    wrap('read', async (req, res, policy) => {
      const sel = selection(req);
      await requireStudy(policy, sel.studyUid);
      const row = (await svc.store.instances(sel))[0];
      if (!row) throw notFound('no instance matches');
      if (row.pixel_offset === null || row.pixel_length === null) {
        throw FhirError.of(406, 'not-supported', `frames are served for uncompressed transfer syntaxes only; this instance is stored as ${row.transfer_syntax}`);
      }
      const md = row.metadata;
      const frameBytes = (num(md, '00280010') ?? 0) * (num(md, '00280011') ?? 0) * (num(md, '00280002') ?? 1) * ((num(md, '00280100') ?? 8) / 8);
      const total = row.frames ?? 1;
      const wanted = String(req.params.frames)
        .split(',')
        .map((f) => Number(f.trim()));
      for (const f of wanted) if (!Number.isInteger(f) || f < 1 || f > total) throw badRequest(`frame "${f}" is out of range 1..${total}`);
      if (!frameBytes || frameBytes * total > Number(row.pixel_length) + 1) throw FhirError.of(406, 'not-supported', 'the frame geometry (Rows, Columns, Bits Allocated) does not fit the Pixel Data');
      const w = new MultipartWriter(res);
      res.status(200).setHeader('Content-Type', w.contentType('application/octet-stream'));
      const swap = row.transfer_syntax === '1.2.840.10008.1.2.2' && (num(md, '00280100') ?? 8) === 16;
      for (const f of wanted) {
        const start = Number(row.pixel_offset) + (f - 1) * frameBytes;
        let data = await readRange(await svc.store.blobs.get(row.blob_key), start, frameBytes);
        // Frames are delivered little endian (the default for application/octet-stream); big-endian words are swapped.
        if (swap) data = Buffer.from(data).swap16();
        await w.part('application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1', data);
      }
      await w.end();
    }),
  );

  return router;
}

function intParam(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw badRequest(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

function failure(sopClass: string, sopUid: string, status: number, reason: string): DicomJson {
  return {
    '00081150': sopClass ? { vr: 'UI', Value: [sopClass] } : { vr: 'UI' },
    '00081155': sopUid ? { vr: 'UI', Value: [sopUid] } : { vr: 'UI' },
    '00081197': { vr: 'US', Value: [status] },
    // Error Comment: a human-readable reason next to the numeric Failure Reason.
    '00000902': { vr: 'LO', Value: [reason.slice(0, 64)] },
  };
}

/** Reads `length` bytes at `start` from a stream without holding more than the requested range. */
async function readRange(stream: AsyncIterable<Buffer> & { destroy?: () => void }, start: number, length: number): Promise<Buffer> {
  const out: Buffer[] = [];
  let pos = 0;
  let got = 0;
  for await (const chunk of stream) {
    const end = pos + chunk.length;
    if (end > start && got < length) {
      const s = Math.max(0, start - pos);
      const piece = chunk.subarray(s, Math.min(chunk.length, s + (length - got)));
      out.push(piece);
      got += piece.length;
    }
    pos = end;
    if (got >= length) break;
  }
  stream.destroy?.();
  return Buffer.concat(out);
}
