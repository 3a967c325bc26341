/**
 * SQL conditions on the value columns of one index row, from one search value: token `system|code`, reference,
 * date and number prefixes (with the value's precision as a range), quantities with units, composites.
 */
import { badRequest } from '../outcome.js';
import type { Filter } from './parse.js';
import type { Sql } from './query.js';
import { decimalRange, dateRange, likeEscape, normalizeString, pgTimestamp, splitUnescaped, unescapeValue } from './values.js';
import type { DateRange } from './values.js';

const PREFIXES = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);

/** Splits an ordered-type value into prefix and rest: "ge2020" → ['ge', '2020']. */
export function splitPrefix(v: string): [string, string] {
  const m = /^([a-z]{2})(.*)$/.exec(v);
  if (m && PREFIXES.has(m[1])) return [m[1], m[2]];
  if (m && /^[a-z]{2}[-+\d.]/.test(v)) throw new Error(`unknown prefix "${m[1]}"`);
  return ['eq', v];
}

export function bad(f: { name: string }, msg: string): never {
  throw badRequest(`Invalid value for search parameter "${f.name}": ${msg}`, f.name);
}

/** The comparison prefix (eq, gt, …) and the rest of a value, or a 400 naming the parameter. */
function prefixOf(f: { name: string }, v: string): [string, string] {
  try {
    return splitPrefix(v);
  } catch (e) {
    return bad(f, (e as Error).message);
  }
}

/** `code`, `system|code`, `|code` (no system), `system|` (any code in system). */
export function tokenMatch(v: string, systemCol: string, valueCol: string, sql: Sql): string {
  const parts = splitUnescaped(v, '|');
  if (parts.length === 1) return `${valueCol} = ${sql.p(unescapeValue(v))}`;
  const system = unescapeValue(parts[0]);
  const code = unescapeValue(parts.slice(1).join('|'));
  if (system === '' && code === '') return 'false';
  if (system === '') return `(${systemCol} IS NULL AND ${valueCol} = ${sql.p(code)})`;
  if (code === '') return `${systemCol} = ${sql.p(system)}`;
  return `(${systemCol} = ${sql.p(system)} AND ${valueCol} = ${sql.p(code)})`;
}

export function referenceMatch(f: Extract<Filter, { kind: 'value' }>, v: string, typeCol: string, idCol: string, sql: Sql): string {
  let ref = v;
  const base = sql.baseUrl.replace(/\/+$/, '');
  if (base && ref.startsWith(base + '/')) ref = ref.slice(base.length + 1);
  ref = ref.replace(/\/_history\/[^/]+$/, '');
  const typeModifier = f.modifier && f.modifier !== 'missing' ? f.modifier : undefined;
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
  if (m) {
    if (typeModifier && typeModifier !== m[1]) bad(f, `"${v}" is not a ${typeModifier} reference`);
    return `(${typeCol} = ${sql.p(m[1])} AND ${idCol} = ${sql.p(m[2])})`;
  }
  if (/^[A-Za-z0-9\-.]{1,64}$/.test(ref)) {
    return typeModifier ? `(${typeCol} = ${sql.p(typeModifier)} AND ${idCol} = ${sql.p(ref)})` : `${idCol} = ${sql.p(ref)}`;
  }
  // absolute URLs, canonicals and urns are stored whole
  return `(${typeCol} IS NULL AND ${idCol} = ${sql.p(ref)})`;
}

export function parseDateValue(f: { name: string }, v: string): [string, DateRange] {
  const [prefix, rest] = prefixOf(f, v);
  const r = dateRange(rest);
  if (!r) bad(f, `"${rest}" is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][zone])`);
  return [prefix, r];
}

/**
 * Date prefixes with the value's precision as a range S = [s.low, s.high] against stored ranges T = [low, high]
 * (R4 search §3.1.1.4.2): eq: T ⊆ S; gt: T reaches above S; lt: T reaches below S; ge: gt or eq; le: lt or eq;
 * sa: T starts after S; eb: T ends before S; ap: T overlaps S widened by 10% of its distance from now.
 */
export function dateCondition(f: { name: string }, v: string, lowCol: string, highCol: string, sql: Sql): string {
  const [prefix, s] = parseDateValue(f, v);
  // bind only what the prefix uses: an unused parameter has no type and PostgreSQL rejects it
  let loP: string | undefined;
  let hiP: string | undefined;
  const L = (): string => (loP ??= `${sql.p(pgTimestamp(s.low))}::timestamptz`);
  const H = (): string => (hiP ??= `${sql.p(pgTimestamp(s.high))}::timestamptz`);
  switch (prefix) {
    case 'eq':
      return `(${lowCol} >= ${L()} AND ${highCol} <= ${H()})`;
    case 'ne':
      return `(${lowCol} < ${L()} OR ${highCol} > ${H()})`;
    case 'gt':
      return `${highCol} > ${H()}`;
    case 'lt':
      return `${lowCol} < ${L()}`;
    case 'ge':
      return `(${highCol} >= ${L()} AND (${highCol} > ${H()} OR ${lowCol} >= ${L()}))`;
    case 'le':
      return `(${lowCol} <= ${H()} AND (${lowCol} < ${L()} OR ${highCol} <= ${H()}))`;
    case 'sa':
      return `${lowCol} > ${H()}`;
    case 'eb':
      return `${highCol} < ${L()}`;
    case 'ap': {
      const now = Date.now();
      const widen = Math.max(Math.abs(now - s.low.getTime()), Math.abs(now - s.high.getTime())) * 0.1;
      const wlo = `${sql.p(pgTimestamp(new Date(s.low.getTime() - widen)))}::timestamptz`;
      const whi = `${sql.p(pgTimestamp(new Date(s.high.getTime() + widen)))}::timestamptz`;
      return `(${lowCol} <= ${whi} AND ${highCol} >= ${wlo})`;
    }
  }
  return bad(f, `unsupported prefix "${prefix}"`);
}

/**
 * Number/quantity prefixes: eq and ne use the implicit range of the value's precision ("100" = [99.5, 100.5));
 * the others compare with the exact value; ap is ±10%. Stored [low, high] (a Range may lack an end).
 */
function numberCondition(f: { name: string }, prefix: string, text: string, lowCol: string, highCol: string, sql: Sql): string {
  const r = decimalRange(text);
  if (!r) bad(f, `"${text}" is not a number`);
  const low = `COALESCE(${lowCol}, ${highCol})`;
  const high = `COALESCE(${highCol}, ${lowCol})`;
  let vP: string | undefined;
  const V = (): string => (vP ??= `${sql.p(String(r.value))}::numeric`);
  switch (prefix) {
    case 'eq':
      return `(${lowCol} >= ${sql.p(String(r.low))}::numeric AND ${highCol} < ${sql.p(String(r.high))}::numeric)`;
    case 'ne':
      return `NOT (${low} >= ${sql.p(String(r.low))}::numeric AND ${high} < ${sql.p(String(r.high))}::numeric)`;
    case 'gt':
    case 'sa':
      return `${high} > ${V()}`;
    case 'lt':
    case 'eb':
      return `${low} < ${V()}`;
    case 'ge':
      return `${high} >= ${V()}`;
    case 'le':
      return `${low} <= ${V()}`;
    case 'ap': {
      const d = Math.abs(r.value) * 0.1;
      return `(${low} <= ${sql.p(String(r.value + d))}::numeric AND ${high} >= ${sql.p(String(r.value - d))}::numeric)`;
    }
  }
  return bad(f, `unsupported prefix "${prefix}"`);
}

/** `[prefix]number`, `[prefix]number|system|code`, `[prefix]number||unit`. */
export function quantityCondition(
  f: { name: string },
  v: string,
  lowCol: string,
  highCol: string,
  systemCol: string,
  unitCol: string,
  withUnits: boolean,
  sql: Sql,
): string {
  const [prefix, rest] = prefixOf(f, v);
  const parts = splitUnescaped(rest, '|');
  if (parts.length !== 1 && parts.length !== 3) bad(f, `"${v}" must be number, number|system|code or number||code`);
  if (parts.length === 3 && !withUnits) bad(f, `"${v}": a number parameter takes no units`);
  const conds = [numberCondition(f, prefix, parts[0], lowCol, highCol, sql)];
  if (parts.length === 3) {
    const system = unescapeValue(parts[1]);
    const code = unescapeValue(parts[2]);
    if (system) conds.push(`${systemCol} = ${sql.p(system)}`);
    if (code) conds.push(`${unitCol} = ${sql.p(code)}`);
  }
  return `(${conds.join(' AND ')})`;
}

export function compositeCondition(f: Extract<Filter, { kind: 'value' }>, v: string, sql: Sql): string {
  const parts = f.def.parts!;
  const values = splitUnescaped(v, '$');
  if (values.length !== parts.length) bad(f, `"${v}" must have ${parts.length} parts separated by "$"`);
  const conds: string[] = [];
  // first part: token (or reference) on c1_*
  if (parts[0].type === 'reference') {
    conds.push(`c1_value = ${sql.p(unescapeValue(values[0]))}`);
  } else {
    conds.push(tokenMatch(values[0], 'c1_system', 'c1_value', sql));
  }
  const p2 = parts[1];
  switch (p2.type) {
    case 'token':
      conds.push(tokenMatch(values[1], 't2_system', 't2_value', sql));
      break;
    case 'string':
      conds.push(`t2_value LIKE ${sql.p(likeEscape(normalizeString(unescapeValue(values[1]))) + '%')}`);
      break;
    case 'reference':
    case 'uri':
      conds.push(`t2_value = ${sql.p(unescapeValue(values[1]))}`);
      break;
    case 'date':
      conds.push(dateCondition(f, values[1], 'd2_low', 'd2_high', sql));
      break;
    case 'number':
    case 'quantity':
      conds.push(quantityCondition(f, values[1], 'n2_low', 'n2_high', 'n2_system', 'n2_unit', p2.type === 'quantity', sql));
      break;
    default:
      bad(f, `composite part type ${p2.type} is not supported`);
  }
  if (parts[2]) {
    let prefix: string;
    let rest: string;
    try {
      [prefix, rest] = splitPrefix(values[2]);
    } catch (e) {
      bad(f, (e as Error).message);
    }
    conds.push(numberCondition(f, prefix, rest, 'n3_low', 'n3_high', sql));
  }
  return `(${conds.join(' AND ')})`;
}
