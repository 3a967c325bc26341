/**
 * The plain line format of bedside devices that stream one reading per line:
 *   csv: `2024-05-01T10:00:00Z,HR,72,/min`   (column order configurable)
 *   kv:  `time=2024-05-01T10:00:00 HR=72 SPO2=97 dev=MON-7`   (every key but time/device is a code)
 * Times without an offset are wall-clock times in the port's zone.
 */
import type { CodeMap } from '../mapping/codemap.js';
import { DEFAULT_CODE_MAP, LOINC, embeddedLoinc, lookupCode, toUcum } from '../mapping/codemap.js';
import type { ObservationDraft } from '../mapping/draft.js';
import { fromWallClock } from '../mapping/time.js';

export interface LineFormat {
  format: 'csv' | 'kv';
  /** csv column names: timestamp, code, value, unit, device; others are ignored. */
  columns: string[];
  separator: string;
  /** kv: the key holding the time. */
  timeKey: string;
  /** kv: the key holding a device id, if the stream multiplexes devices. */
  deviceKey?: string;
}

export const LINE_CODE_SYSTEM = 'urn:conflux:serial:line-code';

export interface ParsedLine {
  at: Date;
  effective: string;
  device?: string;
  observations: ObservationDraft[];
}

export function parseTime(s: string, timeZone: string): { at: Date; fhir: string } {
  const t = s.trim();
  const withOffset = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.exec(t);
  if (withOffset) {
    const d = new Date(t);
    if (!Number.isNaN(d.getTime())) return { at: d, fhir: t };
  }
  const local = /^(\d{4})-?(\d{2})-?(\d{2})[T ]?(\d{2}):?(\d{2}):?(\d{2})?(?:\.\d+)?$/.exec(t);
  if (local) {
    return fromWallClock({ y: +local[1], mo: +local[2], d: +local[3], h: +local[4], mi: +local[5], se: +(local[6] ?? 0), precision: 'second' }, timeZone);
  }
  if (/^\d{10}(\d{3})?$/.test(t)) {
    const d = new Date(t.length === 10 ? Number(t) * 1000 : Number(t));
    return { at: d, fhir: d.toISOString() };
  }
  throw new Error(`"${s}" is not a time (ISO 8601, YYYYMMDDHHMMSS or Unix seconds)`);
}

function observation(code: string, value: string, unit: string | undefined, map: CodeMap, t: { at: Date; fhir: string }): ObservationDraft {
  const mapped = lookupCode(map, code, code);
  const loinc = mapped?.loinc ?? embeddedLoinc([code]);
  const n = /^[+-]?(\d+\.?\d*|\.\d+)$/.test(value.trim()) ? Number(value) : undefined;
  const u = unit?.trim() || mapped?.ucum;
  const ucum = u ? toUcum(u) : undefined;
  return {
    testId: code,
    code: {
      coding: [...(loinc ? [{ system: LOINC, code: loinc, ...(mapped?.display ? { display: mapped.display } : {}) }] : []), { system: LINE_CODE_SYSTEM, code }],
      text: mapped?.display ?? code,
    },
    loinc,
    value: n !== undefined ? { kind: 'quantity', value: n, ...(u ? { unit: u } : {}), ...(ucum ? { ucum } : {}) } : { kind: 'string', value: value.trim() },
    interpretation: [],
    status: 'final',
    effective: t.fhir,
    at: t.at,
    notes: [],
  };
}

/** Parses one line; throws naming the problem. Blank lines and `#` comments give null. */
export function parseLine(line: string, fmt: LineFormat, timeZone: string, codeMap: CodeMap = {}): ParsedLine | null {
  const text = line.replace(/\r$/, '').trim();
  if (!text || text.startsWith('#')) return null;
  const map = { ...DEFAULT_CODE_MAP, ...codeMap };
  if (fmt.format === 'csv') {
    const cells = text.split(fmt.separator).map((c) => c.trim());
    const col = (name: string) => {
      const i = fmt.columns.indexOf(name);
      return i >= 0 ? cells[i] : undefined;
    };
    if (cells.length < fmt.columns.filter((c) => c !== 'unit' && c !== 'device').length) {
      throw new Error(`line has ${cells.length} fields, expected ${fmt.columns.join(fmt.separator)}`);
    }
    const code = col('code');
    const value = col('value');
    if (!code) throw new Error('line has no code');
    if (value === undefined || value === '') throw new Error(`line has no value for ${code}`);
    const ts = col('timestamp');
    if (!ts) throw new Error('line has no timestamp');
    const t = parseTime(ts, timeZone);
    return { at: t.at, effective: t.fhir, ...(col('device') ? { device: col('device') } : {}), observations: [observation(code, value, col('unit'), map, t)] };
  }
  const pairs = text.split(fmt.separator === ' ' ? /\s+/ : fmt.separator).filter(Boolean);
  const kv: Array<[string, string]> = [];
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`"${p}" is not key=value`);
    kv.push([p.slice(0, eq).trim(), p.slice(eq + 1).trim()]);
  }
  const time = kv.find(([k]) => k === fmt.timeKey)?.[1];
  if (!time) throw new Error(`line has no ${fmt.timeKey}=…`);
  const t = parseTime(time, timeZone);
  const device = fmt.deviceKey ? kv.find(([k]) => k === fmt.deviceKey)?.[1] : undefined;
  const obs = kv.filter(([k]) => k !== fmt.timeKey && k !== fmt.deviceKey).map(([k, v]) => {
    // `HR=72/min` carries its unit after the number.
    const m = /^([+-]?(?:\d+\.?\d*|\.\d+))\s*(\S+)?$/.exec(v);
    return observation(k, m ? m[1] : v, m?.[2], map, t);
  });
  if (obs.length === 0) throw new Error('line has no reading (only the time)');
  return { at: t.at, effective: t.fhir, ...(device ? { device } : {}), observations: obs };
}
