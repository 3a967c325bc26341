/**
 * Planning of a search's match query: the filters as SQL predicates (nested on the index tables where they
 * can be), the access conditions, and the ORDER BY of `_sort` — one SELECT over `resource r` that a page or a
 * count is cut from.
 */
import type { Queryable } from '../../db/database.js';
import type { SearchAccess } from './index.js';
import { storage } from './definitions.js';
import type { ParamDef } from './definitions.js';
import type { ParsedSearch } from './parse.js';
import { Sql, filterPredicate, storageCond } from './query.js';
import type { Pred } from './query.js';
import { SORT_ROW_TYPES } from './extract.js';
import { accessConditions } from './access.js';

export interface Row {
  resource_type: string;
  id: string;
  content: string;
}

export interface MatchQuery {
  sql: Sql;
  from: string;
  where: string;
  orderBy: string;
  /** 'inner' mode: the sort-row column the page is ordered by (for keyset cursors). */
  keyExpr?: string;
  /** The id column to bound for keyset paging in id order (the driving filter's, when there is one). */
  idExpr: string;
}

/**
 * How the first sort key is handled when it has rows in search_sort (dates, numbers): 'inner' joins them so
 * PostgreSQL can walk the (code, hi/lo) index in order and stop after one page; 'missing' selects the resources
 * that lack the key (sorted after all others). 'left' is a plain LEFT JOIN (system-level search).
 */
export type FirstKeyMode = 'inner' | 'missing' | 'left';

const SORT_EXPR: Record<string, [string, string]> = {
  string: ['search_string', 'value'],
  token: ['search_token', 'value'],
  reference: ['search_reference', "COALESCE(target_type || '/', '') || target_id"],
  uri: ['search_uri', 'value'],
};

/**
 * `r.id IN (A) AND r.id IN (B)` → `r.id IN (SELECT id FROM A WHERE … AND id IN (B))`: the filters are
 * intersected on the index tables first, so only the matching ids read `resource` (patient=…&code=… probes the
 * code of the patient's 100 Observations in the token index instead of fetching the 100 resources).
 */
function nestIdFilters(preds: Pred[]): Pred[] {
  const nestable = preds.filter((p) => p.idIn);
  if (nestable.length < 2) return preds;
  const [first, ...rest] = nestable.map((p) => p.idIn!);
  const where = `${first.where} AND ${rest.map((p) => `id IN (SELECT id FROM ${p.table} WHERE ${p.where})`).join(' AND ')}`;
  const nested: Pred = { sql: `r.id IN (SELECT id FROM ${first.table} WHERE ${where})`, idIn: { table: first.table, where } };
  return [nested, ...preds.filter((p) => !p.idIn)];
}

export function buildMatchQuery(
  parsed: ParsedSearch,
  types: string[],
  access: SearchAccess | undefined,
  baseUrl: string,
  firstKey: FirstKeyMode = 'left',
  sql = new Sql(baseUrl),
): MatchQuery {
  const where: string[] = [
    types.length === 1 ? `r.resource_type = ${sql.p(types[0])}` : `r.resource_type = ANY(${sql.p(types)}::text[])`,
    'NOT r.deleted',
  ];
  const preds = nestIdFilters(parsed.filters.map((f) => filterPredicate(f, 'r', types, sql)));
  const joins: string[] = [];
  let idExpr = 'r.id';
  const driver = types.length === 1 && parsed.sort.length === 0 ? preds.find((p) => p.idIn) : undefined;
  if (driver) {
    // In id order, drive from the filter's index as a join: its ids come out sorted, so the first page reads
    // `_count` entries and `_count` resources, whatever the planner guesses about how many rows match (as an
    // IN (…) it may fetch every match's resource and sort them).
    joins.push(`JOIN (SELECT DISTINCT id FROM ${driver.idIn!.table} WHERE ${driver.idIn!.where}) f ON f.id = r.id`);
    idExpr = 'f.id';
  }
  const filterConds = preds.filter((p) => p !== driver).map((p) => p.sql);
  where.push(...filterConds);
  where.push(...accessConditions(access, types, sql));
  const order: string[] = [];
  let idDir = 'ASC';
  let keyExpr: string | undefined;
  parsed.sort.forEach((key, i) => {
    const dir = key.descending ? 'DESC' : 'ASC';
    const a = `s${i}`;
    if (key.def.column === 'id') order.push(`r.id ${dir}`);
    else if (key.def.column === 'last_updated') order.push(`r.last_updated ${dir}`);
    else if (SORT_ROW_TYPES.has(key.def.type) && !hasSortRows(key.def)) {
      // an alias over several codes (combo-value-quantity): the extreme over their sort rows, per resource
      order.push(
        `(SELECT ${key.descending ? 'max(x.hi)' : 'min(x.lo)'} FROM search_sort x WHERE x.resource_type = r.resource_type ` +
          `AND x.id = r.id AND ${storageCond(key.def, sql, '', 'x.')}) ${dir} NULLS LAST`,
      );
    } else if (SORT_ROW_TYPES.has(key.def.type)) {
      const code = storage(key.def).codes[0];
      const col = key.descending ? 'hi' : 'lo';
      if (i === 0 && firstKey === 'inner') {
        joins.push(`JOIN search_sort ${a} ON ${a}.resource_type = ${sql.p(types[0])} AND ${a}.code = ${sql.p(code)} AND ${a}.id = r.id`);
        order.push(`${a}.${col} ${dir}`);
        keyExpr = `${a}.${col}`;
        idDir = dir; // same direction as the index, so the walk needs no extra sort
      } else if (i === 0 && firstKey === 'missing') {
        // correlated NOT EXISTS: an anti-join probing (resource_type, id, code), not a scan of every sort row
        where.push(`NOT EXISTS (SELECT 1 FROM search_sort x WHERE x.resource_type = r.resource_type AND x.id = r.id AND x.code = ${sql.p(code)})`);
      } else {
        joins.push(`LEFT JOIN search_sort ${a} ON ${a}.resource_type = r.resource_type AND ${a}.id = r.id AND ${a}.code = ${sql.p(code)}`);
        order.push(`${a}.${col} ${dir} NULLS LAST`);
      }
    } else {
      const [table, expr] = SORT_EXPR[key.def.type];
      order.push(
        `(SELECT ${key.descending ? 'max' : 'min'}(${expr}) FROM ${table} x WHERE x.resource_type = r.resource_type ` +
          `AND x.id = r.id AND ${storageCond(key.def, sql, '', 'x.')}) ${dir} NULLS LAST`,
      );
    }
  });
  // id (and type) last: a total order, so pages never overlap or skip
  if (types.length > 1) order.push('r.resource_type');
  if (!parsed.sort.some((k) => k.def.column === 'id')) order.push(`r.id ${idDir}`);
  return { sql, from: `resource r ${joins.join(' ')}`, where: where.join('\n  AND '), orderBy: order.join(', '), keyExpr, idExpr };
}

/** Sort keys kept in search_sort under one code (a stored date/number/quantity parameter or a plain alias of one). */
export function hasSortRows(def: ParamDef): boolean {
  const s = storage(def);
  return SORT_ROW_TYPES.has(def.type) && s.codes.length === 1 && !s.targetType;
}

export async function fetchPage(db: Queryable, q: MatchQuery, limit: number, offset: number): Promise<Row[]> {
  const params = [...q.sql.params, limit, offset];
  const n = q.sql.params.length;
  const key = q.keyExpr ? `, ${q.keyExpr} AS sort_key` : '';
  const rows = await db.query<Row>(
    `SELECT r.resource_type, r.id, r.content${key} FROM ${q.from}\nWHERE ${q.where}\nORDER BY ${q.orderBy}\nLIMIT $${n + 1} OFFSET $${n + 2}`,
    params,
  );
  return rows.rows;
}

/**
 * One page of matches (count + 1 rows, to know whether a next page exists). When the first sort key has
 * sort rows, resources having it are paged from its index and the ones lacking it follow.
 */
export async function countMatches(db: Queryable, q: MatchQuery, mode: 'estimate' | 'accurate'): Promise<number> {
  const countSql = `SELECT count(*)::bigint AS n FROM ${q.from} WHERE ${q.where}`;
  if (mode === 'estimate') {
    const r = await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${countSql.replace('count(*)::bigint AS n', 'r.id')}`, q.sql.params);
    const raw = r.rows[0]['QUERY PLAN'];
    const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: { 'Plan Rows': number } }>;
    return Math.round(plan[0].Plan['Plan Rows']);
  }
  const r = await db.query<{ n: number | string }>(countSql, q.sql.params);
  return Number(r.rows[0].n);
}
