/**
 * Turns parsed filters into SQL conditions over the index tables. Every condition is a predicate on a
 * `resource` alias of the form `alias.id IN (SELECT id FROM search_x WHERE resource_type = … AND code = … AND …)`,
 * so PostgreSQL can drive the query from the most selective index and never reads resource JSON.
 */
import { badRequest } from '../outcome.js';
import { paramOf, storage } from './definitions.js';
import type { ParamDef } from './definitions.js';
import type { Filter } from './parse.js';
import {
  dateRange,
  decimalRange,
  likeEscape,
  normalizeString,
  pgTimestamp,
  splitUnescaped,
  unescapeValue,
} from './values.js';
import type { DateRange } from './values.js';

/** Collects bind parameters while SQL text is being built. */
export class Sql {
  readonly params: unknown[] = [];
  constructor(readonly baseUrl = '') {}
  p(v: unknown): string {
    this.params.push(v);
    return `$${this.params.length}`;
  }
}

const TABLE: Record<string, string> = {
  token: 'search_token',
  string: 'search_string',
  date: 'search_date',
  number: 'search_quantity',
  quantity: 'search_quantity',
  reference: 'search_reference',
  uri: 'search_uri',
  composite: 'search_composite',
};

const PREFIXES = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);

/** Splits an ordered-type value into prefix and rest: "ge2020" → ['ge', '2020']. */
export function splitPrefix(v: string): [string, string] {
  const m = /^([a-z]{2})(.*)$/.exec(v);
  if (m && PREFIXES.has(m[1])) return [m[1], m[2]];
  if (m && /^[a-z]{2}[-+\d.]/.test(v)) throw new Error(`unknown prefix "${m[1]}"`);
  return ['eq', v];
}

/** Restriction of a subquery to the searched type(s). */
function typeCond(sql: Sql, types: string[]): string {
  return types.length === 1 ? `resource_type = ${sql.p(types[0])}` : `resource_type = ANY(${sql.p(types)}::text[])`;
}

/**
 * A filter's SQL predicate on a `resource` alias. `idIn` keeps the structure of the common form
 * `alias.id IN (SELECT id FROM <table> WHERE <where>)` (one type, not negated), so the planner can nest such
 * filters into one another or drive the query from one without re-reading the SQL text.
 */
export interface Pred {
  sql: string;
  idIn?: { table: string; where: string };
}

/** `alias.id IN (sub)` for one type, `(alias.resource_type, alias.id) IN (sub)` for several. */
function idIn(alias: string, types: string[], table: string, where: string, sql: Sql, negate = false): Pred {
  const not = negate ? 'NOT ' : '';
  if (types.length === 1) {
    const w = `${typeCond(sql, types)} AND ${where}`;
    return { sql: `${alias}.id ${not}IN (SELECT id FROM ${table} WHERE ${w})`, ...(negate ? {} : { idIn: { table, where: w } }) };
  }
  return { sql: `(${alias}.resource_type, ${alias}.id) ${not}IN (SELECT resource_type, id FROM ${table} WHERE ${typeCond(sql, types)} AND ${where})` };
}

const text = (sql: string): Pred => ({ sql });

/**
 * The rows of a parameter in its index table: `code = …` for a stored parameter; for an alias the codes that
 * hold its values (and, for `patient` = `subject.where(resolve() is Patient)`, the target type). `suffix`
 * selects the companion rows (`:text`, `:of-type`, `:identifier`). `col` prefixes column names with a table alias.
 */
export function storageCond(def: ParamDef, sql: Sql, suffix = '', col = ''): string {
  const s = storage(def);
  const codes = s.codes.map((c) => c + suffix);
  const c = codes.length === 1 ? `${col}code = ${sql.p(codes[0])}` : `${col}code = ANY(${sql.p(codes)}::text[])`;
  return s.targetType && suffix === '' ? `${c} AND ${col}target_type = ${sql.p(s.targetType)}` : c;
}

const or = (parts: string[]): string => (parts.length === 1 ? parts[0] : `(${parts.join(' OR ')})`);

/** The SQL predicate on `alias` (a row of `resource`) for one filter. */
export function filterCondition(f: Filter, alias: string, types: string[], sql: Sql): string {
  return filterPredicate(f, alias, types, sql).sql;
}

/** `filterCondition` with its structure kept (see `Pred`). */
export function filterPredicate(f: Filter, alias: string, types: string[], sql: Sql): Pred {
  if (types.length > 1 && f.kind !== 'has' && !f.def.column) {
    // System-level search: a code may be stored under its own rows in one type and be an alias in another
    // (`patient` of AllergyIntolerance vs Observation); then each type gets its own condition.
    const defs = types.map((t) => paramOf(t, f.def.code));
    const key = (d: ParamDef | undefined): string => JSON.stringify(d ? storage(d) : null);
    if (defs.some((d) => key(d) !== key(f.def))) {
      return text(or(
        types.map((t, i) =>
          defs[i] ? `(${alias}.resource_type = ${sql.p(t)} AND ${filterCondition({ ...f, def: defs[i] } as Filter, alias, [t], sql)})` : 'false',
        ),
      ));
    }
  }
  switch (f.kind) {
    case 'missing':
      return missingCondition(f.def, f.missing, alias, types, sql);
    case 'chain':
      return chainCondition(f, alias, types, sql);
    case 'has':
      return text(hasCondition(f, alias, types, sql));
    case 'value':
      return valueCondition(f, alias, types, sql);
  }
}

function missingCondition(def: ParamDef, missing: boolean, alias: string, types: string[], sql: Sql): Pred {
  if (def.column === 'id' || def.column === 'last_updated') return text(missing ? 'false' : 'true');
  if (def.column === 'compartments') return text(missing ? `${alias}.compartments = '{}'` : `${alias}.compartments <> '{}'`);
  return idIn(alias, types, TABLE[def.type], storageCond(def, sql), sql, missing);
}

function chainCondition(f: Extract<Filter, { kind: 'chain' }>, alias: string, types: string[], sql: Sql): Pred {
  const perTarget = f.targets.map(({ type, inner }) => {
    const innerCond = filterCondition(inner, 'c', [type], sql);
    return (
      `(target_type = ${sql.p(type)} AND target_id IN ` +
      `(SELECT c.id FROM resource c WHERE c.resource_type = ${sql.p(type)} AND NOT c.deleted AND ${innerCond}))`
    );
  });
  return idIn(alias, types, 'search_reference', `${storageCond(f.def, sql)} AND ${or(perTarget)}`, sql);
}

function hasCondition(f: Extract<Filter, { kind: 'has' }>, alias: string, types: string[], sql: Sql): string {
  const innerCond = filterCondition(f.inner, 'h', [f.sourceType], sql);
  const src = sql.p(f.sourceType);
  const sub =
    `SELECT target_id FROM search_reference WHERE resource_type = ${src} AND ${storageCond(f.refDef, sql)} ` +
    `AND target_type = ${types.length === 1 ? sql.p(types[0]) : `${alias}.resource_type`} ` +
    `AND id IN (SELECT h.id FROM resource h WHERE h.resource_type = ${src} AND NOT h.deleted AND ${innerCond})`;
  return `${alias}.id IN (${sub})`;
}

function bad(f: { name: string }, msg: string): never {
  throw badRequest(`Invalid value for search parameter "${f.name}": ${msg}`, f.name);
}

function valueCondition(f: Extract<Filter, { kind: 'value' }>, alias: string, types: string[], sql: Sql): Pred {
  const { def } = f;
  const codeCond = (suffix = ''): string => storageCond(def, sql, suffix);
  // Parameters answered from columns of `resource`.
  if (def.column === 'id') {
    const ids = f.values.map(unescapeValue);
    const c = `${alias}.id = ANY(${sql.p(ids)}::text[])`;
    return text(f.modifier === 'not' ? `NOT (${c})` : c);
  }
  if (def.column === 'last_updated') {
    return text(or(f.values.map((v) => dateCondition(f, v, `${alias}.last_updated`, `${alias}.last_updated`, sql))));
  }
  if (def.column === 'compartments') {
    return text(`${alias}.compartments && ${sql.p(f.values.map(unescapeValue))}::text[]`);
  }
  switch (def.type) {
    case 'token': {
      if (f.modifier === 'text') {
        const conds = f.values.map((v) => {
          const n = likeEscape(normalizeString(unescapeValue(v)));
          return `(value LIKE ${sql.p(n + '%')} OR value LIKE ${sql.p('% ' + n + '%')})`;
        });
        return idIn(alias, types, 'search_string', `${codeCond(':text')} AND ${or(conds)}`, sql);
      }
      if (f.modifier === 'of-type') {
        const conds = f.values.map((v) => {
          const parts = splitUnescaped(v, '|');
          if (parts.length !== 3 || !parts[1] || !parts[2]) bad(f, `"${v}" must be typeSystem|typeCode|value`);
          return `(system = ${sql.p(`${unescapeValue(parts[0])}|${unescapeValue(parts[1])}`)} AND value = ${sql.p(unescapeValue(parts[2]))})`;
        });
        return idIn(alias, types, 'search_token', `${codeCond(':of-type')} AND ${or(conds)}`, sql);
      }
      const conds = f.values.map((v) => tokenMatch(v, 'system', 'value', sql));
      return idIn(alias, types, 'search_token', `${codeCond()} AND ${or(conds)}`, sql, f.modifier === 'not');
    }
    case 'string': {
      const conds = f.values.map((v) => {
        const raw = unescapeValue(v);
        const n = normalizeString(raw);
        if (f.modifier === 'exact') return `(value = ${sql.p(n)} AND raw = ${sql.p(raw)})`;
        if (f.modifier === 'contains') return `value LIKE ${sql.p('%' + likeEscape(n) + '%')}`;
        return `value LIKE ${sql.p(likeEscape(n) + '%')}`;
      });
      return idIn(alias, types, 'search_string', `${codeCond()} AND ${or(conds)}`, sql);
    }
    case 'date': {
      const conds = f.values.map((v) => dateCondition(f, v, 'low', 'high', sql));
      return idIn(alias, types, 'search_date', `${codeCond()} AND ${or(conds)}`, sql);
    }
    case 'number':
    case 'quantity': {
      const conds = f.values.map((v) => quantityCondition(f, v, 'low', 'high', 'system', 'unit', def.type === 'quantity', sql));
      return idIn(alias, types, 'search_quantity', `${codeCond()} AND ${or(conds)}`, sql);
    }
    case 'reference': {
      if (f.modifier === 'identifier') {
        // Reference.identifier values live in search_token under `<code>:identifier`.
        const conds = f.values.map((v) => tokenMatch(v, 'system', 'value', sql));
        return idIn(alias, types, 'search_token', `${codeCond(':identifier')} AND ${or(conds)}`, sql);
      }
      const conds = f.values.map((v) => referenceMatch(f, unescapeValue(v), 'target_type', 'target_id', sql));
      return idIn(alias, types, 'search_reference', `${codeCond()} AND ${or(conds)}`, sql);
    }
    case 'uri': {
      const conds = f.values.map((v) => {
        const u = unescapeValue(v);
        if (f.modifier === 'below') return `value LIKE ${sql.p(likeEscape(u) + '%')}`;
        if (f.modifier === 'above') {
          const prefixes = [];
          for (let i = u.length; i > 0; i--) if (i === u.length || u[i] === '/') prefixes.push(u.slice(0, i));
          return `value = ANY(${sql.p(prefixes)}::text[])`;
        }
        return `value = ${sql.p(u)}`;
      });
      return idIn(alias, types, 'search_uri', `${codeCond()} AND ${or(conds)}`, sql);
    }
    case 'composite': {
      const conds = f.values.map((v) => compositeCondition(f, v, sql));
      return idIn(alias, types, 'search_composite', `${codeCond()} AND ${or(conds)}`, sql);
    }
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

function referenceMatch(f: Extract<Filter, { kind: 'value' }>, v: string, typeCol: string, idCol: string, sql: Sql): string {
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
  let prefix: string;
  let rest: string;
  try {
    [prefix, rest] = splitPrefix(v);
  } catch (e) {
    bad(f, (e as Error).message);
  }
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
function quantityCondition(
  f: { name: string },
  v: string,
  lowCol: string,
  highCol: string,
  systemCol: string,
  unitCol: string,
  withUnits: boolean,
  sql: Sql,
): string {
  let prefix: string;
  let rest: string;
  try {
    [prefix, rest] = splitPrefix(v);
  } catch (e) {
    bad(f, (e as Error).message);
  }
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

function compositeCondition(f: Extract<Filter, { kind: 'value' }>, v: string, sql: Sql): string {
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
