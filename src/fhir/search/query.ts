/**
 * Turns parsed filters into SQL conditions over the index tables. Every condition is a predicate on a
 * `resource` alias of the form `alias.id IN (SELECT id FROM search_x WHERE resource_type = … AND code = … AND …)`,
 * so PostgreSQL can drive the query from the most selective index and never reads resource JSON.
 */
import { paramOf, storage } from './definitions.js';
import type { ParamDef } from './definitions.js';
import type { Filter } from './parse.js';
import { likeEscape, normalizeString, splitUnescaped, unescapeValue } from './values.js';
import { bad, compositeCondition, dateCondition, quantityCondition, referenceMatch, tokenMatch } from './value-conditions.js';

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
