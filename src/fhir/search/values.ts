/**
 * Value normalisation shared by the indexer and the query builder, so that a stored value and a search value
 * always go through the same function.
 */

/** Longest text we put into a btree (index entries are limited to ~2.7 kB; 4 bytes per char worst case). */
export const MAX_INDEXED_TEXT = 500;

/** Case- and accent-insensitive form used by string search: "Müller" → "muller". */
export function normalizeString(s: string): string {
  return s
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, MAX_INDEXED_TEXT);
}

export interface DateRange {
  low: Date;
  high: Date;
}

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * The closed range of instants a FHIR date/dateTime/instant denotes, by its precision:
 * "2020" → 2020-01-01T00:00:00.000Z … 2020-12-31T23:59:59.999Z. A time without zone is taken as UTC.
 * Returns undefined for anything that is not a FHIR date.
 */
export function dateRange(value: string): DateRange | undefined {
  const m = DATE_RE.exec(value.trim());
  if (!m) return undefined;
  const [, y, mo, d, hh, mi, ss, frac, tz] = m;
  const year = Number(y);
  const month = mo ? Number(mo) - 1 : 0;
  const day = d ? Number(d) : 1;
  if (mo && (month < 0 || month > 11)) return undefined;
  if (d && (day < 1 || day > 31)) return undefined;
  const hour = hh ? Number(hh) : 0;
  const minute = mi ? Number(mi) : 0;
  const second = ss ? Number(ss) : 0;
  if (hour > 24 || minute > 59 || second > 60) return undefined;
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, '0')) : 0;
  let offsetMin = 0;
  if (tz && tz !== 'Z') {
    const sign = tz[0] === '-' ? -1 : 1;
    offsetMin = sign * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6)));
  }
  const at = (yy: number, mm: number, dd: number, h: number, n: number, s: number, f: number): number => {
    const t = new Date(0);
    t.setUTCFullYear(yy, mm, dd);
    t.setUTCHours(h, n, s, f);
    return t.getTime() - offsetMin * 60_000;
  };
  const low = at(year, month, day, hour, minute, second, ms);
  let next: number;
  if (!mo) next = at(year + 1, 0, 1, 0, 0, 0, 0);
  else if (!d) next = at(year, month + 1, 1, 0, 0, 0, 0);
  else if (!hh) next = at(year, month, day + 1, 0, 0, 0, 0);
  else if (!ss) next = low + 60_000;
  else if (!frac) next = low + 1000;
  else next = low + 1;
  // A day that does not exist in its month (2021-02-30) rolls over in Date: reject it instead.
  if (d && new Date(at(year, month, day, 12, 0, 0, 0) + offsetMin * 60_000).getUTCDate() !== day) return undefined;
  return { low: new Date(low), high: new Date(next - 1) };
}

export const MIN_DATE = new Date(-8.64e15);
export const MAX_DATE = new Date(8.64e15);

/** ISO text for timestamptz parameters; the extreme dates map to PostgreSQL's infinities. */
export function pgTimestamp(d: Date): string {
  if (d.getTime() <= MIN_DATE.getTime()) return '-infinity';
  if (d.getTime() >= MAX_DATE.getTime()) return 'infinity';
  return d.toISOString();
}

/**
 * Text whose byte order equals numeric order (IEEE-754 bits, sign-flipped, as hex), for numeric sort keys
 * stored in the same text column as dates and strings.
 */
export function sortableNumber(n: number): string {
  const buf = Buffer.alloc(8);
  buf.writeDoubleBE(n === 0 ? 0 : n); // -0 sorts with 0
  if (buf[0] & 0x80) for (let i = 0; i < 8; i++) buf[i] = ~buf[i] & 0xff;
  else buf[0] |= 0x80;
  return buf.toString('hex');
}

/** Sort key for dates: fixed-width ISO text orders like time (years 0000–9999). */
export function sortableDate(d: Date): string {
  if (d.getTime() <= MIN_DATE.getTime()) return '0000';
  if (d.getTime() >= MAX_DATE.getTime()) return '9999';
  return d.toISOString();
}

/**
 * Implicit range of a decimal search value from its precision: "100" → [99.5, 100.5], "1.50" → [1.495, 1.505].
 * Exponent forms ("1e2") count significant digits of the mantissa.
 */
export function decimalRange(text: string): { value: number; low: number; high: number } | undefined {
  const t = text.trim();
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(t)) return undefined;
  const value = Number(t);
  if (!Number.isFinite(value)) return undefined;
  const [mantissa, exp] = t.toLowerCase().split('e');
  const decimals = mantissa.includes('.') ? mantissa.split('.')[1].length : 0;
  const half = 0.5 * Math.pow(10, -decimals + (exp ? Number(exp) : 0));
  return { value, low: value - half, high: value + half };
}

/** Splits a search value on commas not escaped with a backslash, and unescapes `\,` `\$` `\|` `\\`. */
export function splitOr(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length) {
      cur += c + value[++i];
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Splits on an unescaped separator (`|` for tokens, `$` for composites), keeping escapes in the parts. */
export function splitUnescaped(value: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length) {
      cur += c + value[++i];
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

export function unescapeValue(s: string): string {
  return s.replace(/\\([\\,$|])/g, '$1');
}

/** Escapes LIKE wildcards so a user value is matched literally. */
export function likeEscape(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}
