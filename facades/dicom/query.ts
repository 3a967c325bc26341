/**
 * Patient / study / series / instance queries over the index, for C-FIND (Patient Root and Study Root)
 * and QIDO-RS. Unique keys, patient id, accession, dates and modality narrow the SQL; every other
 * matching key is applied per candidate by the shared matcher, so both protocols match identically.
 */
import { type Queryable, Sql } from '../../src/index.js';
import { matches } from './matching.js';
import type { DicomJson, JsonElement } from './part10.js';

export type Level = 'PATIENT' | 'STUDY' | 'SERIES' | 'IMAGE';

export interface QueryOptions {
  fuzzy?: boolean;
  limit?: number;
  offset?: number;
  /** DICOMweb base URL: adds RetrieveURL (0008,1190). */
  retrieveBase?: string;
}

/** Largest number of candidates one query examines. */
const SCAN_LIMIT = 10_000;

function values(query: DicomJson, tag: string): string[] {
  return (query[tag]?.Value ?? []).map((v) => (typeof v === 'string' ? v.trim() : '')).filter((v) => v !== '');
}

function exact(query: DicomJson, tag: string): string[] {
  const vs = values(query, tag);
  return vs.length && vs.every((v) => !/[*?\\]/.test(v)) && !vs.some((v) => v.includes('-') && query[tag]?.vr === 'DA') ? vs : [];
}

/** The conditions of a DICOM query that SQL can answer (exact values, date ranges); the rest is matched per row. */
class Where {
  readonly parts: string[] = [];
  private readonly bind = new Sql();
  get params(): unknown[] {
    return this.bind.params;
  }
  anyOf(column: string, vals: string[]): void {
    if (vals.length) this.parts.push(`${column} = ANY(${this.bind.p(vals)}::text[])`);
  }
  dateRange(column: string, q: string[]): void {
    const v = q[0];
    if (!v || /[*?]/.test(v) || q.length > 1) return;
    const [lo, hi] = v.includes('-') ? v.split('-').map((s) => s.trim()) : [v, v];
    if (lo) this.parts.push(`${column} >= ${this.bind.p(lo)}`);
    if (hi) this.parts.push(`${column} <= ${this.bind.p(hi.padEnd(8, '9'))}`);
  }
  sql(): string {
    return this.parts.length ? `WHERE ${this.parts.join(' AND ')}` : '';
  }
}

const ui = (v: string): JsonElement => ({ vr: 'UI', Value: [v] });
const is = (n: number | string): JsonElement => ({ vr: 'IS', Value: [Number(n)] });

export async function findLevel(db: Queryable, level: Level, query: DicomJson, opts: QueryOptions = {}): Promise<DicomJson[]> {
  const limit = Math.max(0, opts.limit ?? 1000);
  const offset = Math.max(0, opts.offset ?? 0);
  const base = opts.retrieveBase;
  const w = new Where();
  let rows: Array<Record<string, unknown>>;
  let build: (r: Record<string, unknown>) => DicomJson;

  if (level === 'PATIENT') {
    w.anyOf('st.patient_id', exact(query, '00100020'));
    rows = (
      await db.query(
        `SELECT st.patient_id, st.issuer, (array_agg(st.attrs ORDER BY st.updated_at DESC))[1] AS attrs,
                count(*) AS nstudies,
                (SELECT count(*) FROM dicom_series se JOIN dicom_study s2 ON s2.study_uid = se.study_uid WHERE s2.patient_id = st.patient_id AND s2.issuer = st.issuer) AS nseries,
                (SELECT count(*) FROM dicom_instance i JOIN dicom_study s2 ON s2.study_uid = i.study_uid WHERE s2.patient_id = st.patient_id AND s2.issuer = st.issuer) AS ninstances
           FROM dicom_study st ${w.sql()} GROUP BY st.patient_id, st.issuer ORDER BY st.patient_id LIMIT ${SCAN_LIMIT}`,
        w.params,
      )
    ).rows;
    build = (r) => {
      const a = r.attrs as DicomJson;
      const out: DicomJson = {};
      for (const t of ['00100010', '00100020', '00100021', '00100024', '00100030', '00100040']) if (a[t]) out[t] = a[t];
      out['00201200'] = is(r.nstudies as number);
      out['00201202'] = is(r.nseries as number);
      out['00201204'] = is(r.ninstances as number);
      return out;
    };
  } else if (level === 'STUDY') {
    w.anyOf('st.study_uid', values(query, '0020000D'));
    w.anyOf('st.patient_id', exact(query, '00100020'));
    w.anyOf('st.accession', exact(query, '00080050'));
    w.dateRange('st.study_date', values(query, '00080020'));
    rows = (
      await db.query(
        `SELECT st.study_uid, st.attrs,
                (SELECT array_agg(DISTINCT se.modality) FROM dicom_series se WHERE se.study_uid = st.study_uid) AS modalities,
                (SELECT count(*) FROM dicom_series se WHERE se.study_uid = st.study_uid) AS nseries,
                (SELECT count(*) FROM dicom_instance i WHERE i.study_uid = st.study_uid) AS ninstances
           FROM dicom_study st ${w.sql()} ORDER BY st.study_date DESC, st.study_time DESC, st.study_uid LIMIT ${SCAN_LIMIT}`,
        w.params,
      )
    ).rows;
    build = (r) => {
      const out: DicomJson = { ...(r.attrs as DicomJson) };
      const mods = ((r.modalities as string[] | null) ?? []).filter(Boolean);
      out['00080061'] = mods.length ? { vr: 'CS', Value: mods } : { vr: 'CS' };
      out['00201206'] = is(r.nseries as number);
      out['00201208'] = is(r.ninstances as number);
      out['00080056'] = { vr: 'CS', Value: ['ONLINE'] };
      if (base) out['00081190'] = { vr: 'UR', Value: [`${base}/studies/${r.study_uid}`] };
      return out;
    };
  } else if (level === 'SERIES') {
    w.anyOf('se.study_uid', values(query, '0020000D'));
    w.anyOf('se.series_uid', values(query, '0020000E'));
    w.anyOf('se.modality', exact(query, '00080060'));
    w.anyOf('st.patient_id', exact(query, '00100020'));
    rows = (
      await db.query(
        `SELECT se.series_uid, se.study_uid, se.attrs, st.attrs AS study_attrs,
                (SELECT count(*) FROM dicom_instance i WHERE i.series_uid = se.series_uid) AS ninstances
           FROM dicom_series se JOIN dicom_study st ON st.study_uid = se.study_uid
           ${w.sql()} ORDER BY se.study_uid, se.series_number NULLS LAST, se.series_uid LIMIT ${SCAN_LIMIT}`,
        w.params,
      )
    ).rows;
    build = (r) => {
      const out: DicomJson = { ...(r.study_attrs as DicomJson), ...(r.attrs as DicomJson) };
      out['00201209'] = is(r.ninstances as number);
      out['00080056'] = { vr: 'CS', Value: ['ONLINE'] };
      if (base) out['00081190'] = { vr: 'UR', Value: [`${base}/studies/${r.study_uid}/series/${r.series_uid}`] };
      return out;
    };
  } else {
    w.anyOf('i.study_uid', values(query, '0020000D'));
    w.anyOf('i.series_uid', values(query, '0020000E'));
    w.anyOf('i.sop_uid', values(query, '00080018'));
    w.anyOf('i.sop_class_uid', values(query, '00080016'));
    rows = (
      await db.query(
        `SELECT i.sop_uid, i.series_uid, i.study_uid, i.metadata, i.frames, i.transfer_syntax
           FROM dicom_instance i ${w.sql()} ORDER BY i.study_uid, i.series_uid, i.instance_number NULLS LAST, i.sop_uid LIMIT ${SCAN_LIMIT}`,
        w.params,
      )
    ).rows;
    build = (r) => {
      const out: DicomJson = { ...(r.metadata as DicomJson) };
      out['00083002'] = ui(r.transfer_syntax as string);
      out['00080056'] = { vr: 'CS', Value: ['ONLINE'] };
      if (base) out['00081190'] = { vr: 'UR', Value: [`${base}/studies/${r.study_uid}/series/${r.series_uid}/instances/${r.sop_uid}`] };
      return out;
    };
  }

  const out: DicomJson[] = [];
  let skipped = 0;
  for (const r of rows) {
    const candidate = build(r);
    if (!matches(query, candidate, opts.fuzzy)) continue;
    if (skipped < offset) {
      skipped++;
      continue;
    }
    out.push(candidate);
    if (out.length >= limit) break;
  }
  return out;
}
