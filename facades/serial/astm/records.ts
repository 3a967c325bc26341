/**
 * ASTM E1394 / CLSI LIS2-A2 records. A message is H (header) … L (terminator); records are separated by
 * CR; the H record's second field defines the delimiters (field, repeat, component, escape), e.g. `|\^&`.
 * Fields are 1-based as in the standard: field(1) is the record type letter.
 */
import { ConfluxError } from '../../../src/index.js';

export interface Delimiters {
  field: string;
  repeat: string;
  component: string;
  escape: string;
}

export const DEFAULT_DELIMITERS: Delimiters = { field: '|', repeat: '\\', component: '^', escape: '&' };

export class AstmRecord {
  constructor(
    readonly raw: string,
    readonly fields: string[],
    readonly delimiters: Delimiters,
  ) {}

  get type(): string {
    return this.fields[0]?.trim().toUpperCase().slice(0, 1) ?? '';
  }

  /** Field n (1-based), unescaped, repetitions and components kept as text. */
  field(n: number): string {
    return this.fields[n - 1] ?? '';
  }

  /** Components of field n (first repetition), each unescaped and trimmed. */
  components(n: number, repetition = 0): string[] {
    const rep = this.field(n).split(this.delimiters.repeat)[repetition] ?? '';
    return rep.split(this.delimiters.component).map((c) => unescape(c, this.delimiters).trim());
  }

  /** Repetitions of field n, each as its components. */
  repetitions(n: number): string[][] {
    const f = this.field(n);
    if (f === '') return [];
    return f.split(this.delimiters.repeat).map((r) => r.split(this.delimiters.component).map((c) => unescape(c, this.delimiters).trim()));
  }

  /** Field n unescaped and trimmed; '' when absent. */
  text(n: number): string {
    return unescape(this.field(n), this.delimiters).trim();
  }
}

/** LIS2-A2 escape sequences: &F& field, &S& component, &R& repeat, &E& escape (with '&' as the escape char). */
export function unescape(s: string, d: Delimiters): string {
  const e = d.escape;
  if (!s.includes(e)) return s;
  const map: Record<string, string> = { F: d.field, S: d.component, R: d.repeat, E: d.escape };
  const re = new RegExp(`${escapeRe(e)}([FSRE])${escapeRe(e)}`, 'g');
  return s.replace(re, (_m, c: string) => map[c]);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Delimiters from an H record. A definition whose four characters are not distinct (seen in the wild,
 * e.g. `|\\^&`) cannot be honoured; the standard defaults are used instead and a warning is returned.
 */
export function delimitersOf(headerRecord: string): { delimiters: Delimiters; definition: string; warning?: string } {
  const field = headerRecord[1];
  if (headerRecord[0]?.toUpperCase() !== 'H' || !field) {
    return { delimiters: DEFAULT_DELIMITERS, definition: '', warning: 'no H record: standard delimiters assumed' };
  }
  const end = headerRecord.indexOf(field, 2);
  const definition = headerRecord.slice(2, end < 0 ? undefined : end);
  const chars = [field, ...definition];
  if (definition.length !== 3 || new Set(chars).size !== 4) {
    return {
      delimiters: { ...DEFAULT_DELIMITERS, field },
      definition,
      warning: `H record delimiter definition "${field}${definition}" is not four distinct characters; standard delimiters used`,
    };
  }
  return { delimiters: { field, repeat: definition[0], component: definition[1], escape: definition[2] }, definition };
}

export interface ParsedMessage {
  records: AstmRecord[];
  delimiters: Delimiters;
  warnings: string[];
  /** True when the last record is an L (terminator) record. */
  terminated: boolean;
}

/**
 * Parses the text of one or more messages (records separated by CR, LF tolerated). Records before the
 * first H use the standard delimiters. Throws when the text holds no ASTM record at all.
 */
export function parseRecords(text: string): ParsedMessage {
  const lines = text.split(/\r\n|\r|\n/).filter((l) => l.trim() !== '');
  const warnings: string[] = [];
  let delimiters = DEFAULT_DELIMITERS;
  const records: AstmRecord[] = [];
  for (const line of lines) {
    if (/^[Hh]/.test(line)) {
      const d = delimitersOf(line);
      delimiters = d.delimiters;
      if (d.warning) warnings.push(d.warning);
      // The delimiter definition must not be split (it contains the other delimiters): it is field 2.
      const rest = line.slice(2 + d.definition.length);
      const fields = ['H', d.definition, ...(rest === '' ? [] : rest.slice(1).split(delimiters.field))];
      records.push(new AstmRecord(line, fields, delimiters));
      continue;
    }
    if (!/^[A-Za-z]\s*(\||$)/.test(line.replace(delimiters.field, '|'))) {
      throw new ConfluxError('structure', `not an ASTM record: "${line.slice(0, 40)}" (a record starts with its type letter and the field delimiter)`);
    }
    records.push(new AstmRecord(line, line.split(delimiters.field), delimiters));
  }
  if (records.length === 0) throw new ConfluxError('structure', 'no ASTM records in the transmission');
  return { records, delimiters, warnings, terminated: records[records.length - 1].type === 'L' };
}

/** Splits records into messages, one per H … L. Records after an L and before the next H start a new message. */
export function splitMessages(records: AstmRecord[]): AstmRecord[][] {
  const out: AstmRecord[][] = [];
  let cur: AstmRecord[] = [];
  for (const r of records) {
    if (r.type === 'H' && cur.length) {
      out.push(cur);
      cur = [];
    }
    cur.push(r);
    if (r.type === 'L') {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

/** ASTM date/time YYYYMMDD[HH[MM[SS]]] → its parts; undefined when not a date. */
export function parseAstmDateTime(s: string): { y: number; mo: number; d: number; h: number; mi: number; se: number; precision: 'day' | 'minute' | 'second' } | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?)?/.exec(s.trim());
  if (!m) return undefined;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return undefined;
  const h = Number(m[4] ?? 0), mi = Number(m[5] ?? 0), se = Number(m[6] ?? 0);
  if (h > 23 || mi > 59 || se > 60) return undefined;
  return { y, mo, d, h, mi, se, precision: m[6] ? 'second' : m[4] ? 'minute' : 'day' };
}
