/**
 * Runs a parsed search: one SQL query for the page of matches (plus one for the total when asked), then the
 * _include/_revinclude targets through the reference index, all under the caller's access restrictions.
 */
import type { Bundle, BundleEntry, BundleLink, OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../../db/database.js';
import { badRequest } from '../outcome.js';
import type { SearchAccess, SearchRequest } from './index.js';
import { paramOf, paramsOf, storage } from './definitions.js';
import type { ParamDef } from './definitions.js';
import { parseFilter, parseSearch, UnknownParameterError } from './parse.js';
import type { IncludeSpec, ParsedSearch } from './parse.js';
import { Sql, filterCondition, storageCond } from './query.js';
import { applySummary } from './summary.js';
import { SORT_ROW_TYPES } from './extract.js';
import { allResourceTypes } from './types.js';

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 1000;

interface Row {
  resource_type: string;
  id: string;
  content: string;
}

/** WHERE conditions (on alias `r`) that restrict what the caller may see. */
/** Whether `patientCompartments` confines resources of `type` under `access`. */
export function compartmentApplies(access: SearchAccess | undefined, type: string): boolean {
  if (!access?.patientCompartments) return false;
  const exempt = access.compartmentExempt;
  return !(exempt === '*' || exempt?.has(type));
}

function accessConditions(access: SearchAccess | undefined, types: string[], sql: Sql, alias = 'r'): string[] {
  const conds: string[] = [];
  if (!access) return conds;
  const exempt = types.filter((t) => !compartmentApplies(access, t));
  if (exempt.length < types.length) {
    // Only when some type is confined: a parameter the statement does not reference has no type PostgreSQL can infer.
    const inCompartment = `${alias}.compartments && ${sql.p(access.patientCompartments)}::text[]`;
    conds.push(exempt.length === 0 ? inCompartment : `(${alias}.resource_type = ANY(${sql.p(exempt)}::text[]) OR ${inCompartment})`);
  }
  if (access.typeCriteria) {
    for (const type of types) {
      const alternatives = access.typeCriteria[type];
      if (!alternatives) continue;
      // Each alternative (one granted scope) is an AND of criteria; any one alternative grants visibility.
      const alts = alternatives.map((criteria) => {
        const parts = criteria.map(([name, value]) => {
          let f;
          try {
            f = parseFilter(type, name, value);
          } catch (e) {
            if (e instanceof UnknownParameterError) throw new Error(`access criterion ${type}?${name}: ${e.message}`);
            throw e;
          }
          return filterCondition(f, alias, [type], sql);
        });
        return parts.length ? `(${parts.join(' AND ')})` : 'true';
      });
      const granted = alts.length ? `(${alts.join(' OR ')})` : 'false';
      conds.push(types.length === 1 ? granted : `(${alias}.resource_type <> ${sql.p(type)} OR ${granted})`);
    }
  }
  return conds;
}

function visibleTypes(types: string[], access: SearchAccess | undefined): string[] {
  const allowed = access?.allowedTypes;
  if (!allowed || allowed === '*') return types;
  return types.filter((t) => allowed.has(t));
}

interface MatchQuery {
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
type FirstKeyMode = 'inner' | 'missing' | 'left';

const SORT_EXPR: Record<string, [string, string]> = {
  string: ['search_string', 'value'],
  token: ['search_token', 'value'],
  reference: ['search_reference', "COALESCE(target_type || '/', '') || target_id"],
  uri: ['search_uri', 'value'],
};

const ID_IN = /^r\.id IN \(SELECT id FROM (search_\w+) WHERE ([\s\S]*)\)$/;

/**
 * `r.id IN (A) AND r.id IN (B)` → `r.id IN (SELECT id FROM A WHERE … AND id IN (B))`: the filters are
 * intersected on the index tables first, so only the matching ids read `resource` (patient=…&code=… probes the
 * code of the patient's 100 Observations in the token index instead of fetching the 100 resources).
 */
function nestIdFilters(conds: string[]): string[] {
  const nestable = conds.filter((c) => ID_IN.test(c));
  if (nestable.length < 2) return conds;
  const [first, ...rest] = nestable;
  const [, table, w] = ID_IN.exec(first)!;
  const inner = rest.map((c) => c.replace(/^r\.id IN/, 'id IN'));
  const nested = `r.id IN (SELECT id FROM ${table} WHERE ${w} AND ${inner.join(' AND ')})`;
  return [nested, ...conds.filter((c) => !ID_IN.test(c))];
}

function buildMatchQuery(
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
  const filterConds = nestIdFilters(parsed.filters.map((f) => filterCondition(f, 'r', types, sql)));
  const joins: string[] = [];
  let idExpr = 'r.id';
  const driver = types.length === 1 && parsed.sort.length === 0 ? filterConds.findIndex((c) => ID_IN.test(c)) : -1;
  if (driver >= 0) {
    // In id order, drive from the filter's index as a join: its ids come out sorted, so the first page reads
    // `_count` entries and `_count` resources, whatever the planner guesses about how many rows match (as an
    // IN (…) it may fetch every match's resource and sort them).
    const [, table, w] = ID_IN.exec(filterConds[driver])!;
    joins.push(`JOIN (SELECT DISTINCT id FROM ${table} WHERE ${w}) f ON f.id = r.id`);
    filterConds.splice(driver, 1);
    idExpr = 'f.id';
  }
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
function hasSortRows(def: ParamDef): boolean {
  const s = storage(def);
  return SORT_ROW_TYPES.has(def.type) && s.codes.length === 1 && !s.targetType;
}

async function fetchPage(db: Queryable, q: MatchQuery, limit: number, offset: number): Promise<Row[]> {
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
async function matchPage(
  db: Queryable,
  parsed: ParsedSearch,
  types: string[],
  req: SearchRequest,
  count: number,
): Promise<Row[]> {
  const first = parsed.sort[0];
  const twoPhase = types.length === 1 && first && !first.def.column && hasSortRows(first.def);
  if (!twoPhase) return fetchPage(db, buildMatchQuery(parsed, types, req.access, req.baseUrl), count + 1, parsed.offset);
  const qa = buildMatchQuery(parsed, types, req.access, req.baseUrl, 'inner');
  const a = await fetchPage(db, qa, count + 1, parsed.offset);
  if (a.length > count) return a;
  const haveKey = a.length > 0 ? parsed.offset + a.length : await countMatches(db, { ...qa, where: qa.where, from: qa.from }, 'accurate');
  const qb = buildMatchQuery(parsed, types, req.access, req.baseUrl, 'missing');
  const b = await fetchPage(db, qb, count + 1 - a.length, Math.max(0, parsed.offset - haveKey));
  return [...a, ...b];
}

// ---- keyset paging ----
//
// A `next` link carries `_cursor` = the position after the last row of the page instead of `_offset`, so page
// N costs what page 1 costs (an index range scan from the position) rather than reading and dropping
// N × _count rows. Used for the orders that are an index walk: no `_sort` (order by id), or one `_sort` key kept
// in search_sort (dates, numbers, quantities: phase 'a' walks the resources having the key in (key, id) order,
// phase 'b' the ones lacking it, by id). Other orders, and explicit `_offset` requests, page by offset.

interface Cursor {
  /** The `_sort` the cursor was made for; a cursor is only valid for the same order. */
  sort: string;
  phase: 'a' | 'b';
  key: string | null;
  id: string;
}

const sortSignature = (parsed: ParsedSearch): string => parsed.sort.map((k) => `${k.descending ? '-' : ''}${k.def.code}`).join(',');

function keysetMode(parsed: ParsedSearch, types: string[]): 'id' | 'sortrows' | undefined {
  if (types.length !== 1 || parsed.offset > 0) return undefined;
  if (parsed.sort.length === 0) return 'id';
  if (parsed.sort.length === 1 && !parsed.sort[0].def.column && hasSortRows(parsed.sort[0].def)) return 'sortrows';
  return undefined;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.sort, c.phase, c.key, c.id])).toString('base64url');
}

function decodeCursor(value: string, parsed: ParsedSearch): Cursor {
  let c: Cursor | undefined;
  try {
    const [sort, phase, key, id] = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown[];
    if (typeof sort === 'string' && (phase === 'a' || phase === 'b') && (key === null || typeof key === 'string') && typeof id === 'string') {
      c = { sort, phase, key, id };
    }
  } catch {
    c = undefined;
  }
  if (!c) throw badRequest('_cursor is not a cursor from a next link', '_cursor');
  if (c.sort !== sortSignature(parsed)) throw badRequest('_cursor was made for another _sort; start again from the first page', '_cursor');
  return c;
}

/** A page by keyset: count + 1 rows after the cursor, and the cursor of the row that ends the page. */
async function keysetPage(
  db: Queryable,
  parsed: ParsedSearch,
  types: string[],
  req: SearchRequest,
  count: number,
  mode: 'id' | 'sortrows',
): Promise<{ rows: Row[]; next?: string }> {
  const cursor = parsed.cursor ? decodeCursor(parsed.cursor, parsed) : undefined;
  const sort = sortSignature(parsed);
  const afterId = (q: MatchQuery, id: string): void => {
    // on the driving index too: PostgreSQL does not carry an inequality across the join's r.id = f.id
    const p = q.sql.p(id);
    q.where += `\n  AND r.id > ${p}${q.idExpr !== 'r.id' ? ` AND ${q.idExpr} > ${p}` : ''}`;
  };
  const rows: Array<Row & { phase: 'a' | 'b' }> = [];
  if (mode === 'sortrows' && cursor?.phase !== 'b') {
    const qa = buildMatchQuery(parsed, types, req.access, req.baseUrl, 'inner');
    if (cursor) {
      // (key, id) strictly after the cursor in the walk's direction; the row comparison is an index range bound
      const op = parsed.sort[0].descending ? '<' : '>';
      const alias = qa.keyExpr!.split('.')[0];
      qa.where += `\n  AND (${qa.keyExpr}, ${alias}.id) ${op} (${qa.sql.p(cursor.key)}, ${qa.sql.p(cursor.id)})`;
    }
    for (const r of await fetchPage(db, qa, count + 1, 0)) rows.push({ ...r, phase: 'a' });
  }
  if (rows.length <= count) {
    const qb = buildMatchQuery(parsed, types, req.access, req.baseUrl, mode === 'sortrows' ? 'missing' : 'left');
    if (cursor?.phase === 'b') afterId(qb, cursor.id);
    for (const r of await fetchPage(db, qb, count + 1 - rows.length, 0)) rows.push({ ...r, phase: 'b' });
  }
  if (rows.length <= count) return { rows };
  const last = rows[count - 1];
  const key = last.phase === 'a' ? ((last as Row & { sort_key?: string }).sort_key ?? null) : null;
  return { rows, next: encodeCursor({ sort, phase: last.phase, key, id: last.id }) };
}

async function countMatches(db: Queryable, q: MatchQuery, mode: 'estimate' | 'accurate'): Promise<number> {
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

/** Resolves the searched types of a request (type-level, or `_type` for system-level). */
function requestTypes(req: SearchRequest): string[] {
  if (req.resourceType) {
    if (paramsOf(req.resourceType).size === 0) throw badRequest(`Unknown resource type "${req.resourceType}"`);
    return [req.resourceType];
  }
  const typeParam = req.params.filter(([k]) => k === '_type').flatMap(([, v]) => v.split(','));
  const types = typeParam.map((t) => t.trim()).filter(Boolean);
  for (const t of types) if (paramsOf(t).size === 0) throw badRequest(`_type: unknown resource type "${t}"`, '_type');
  return types.length ? [...new Set(types)] : allResourceTypes();
}

function pageLinks(req: SearchRequest, offset: number, count: number, hasNext: boolean, nextCursor?: string): BundleLink[] {
  const path = `${req.baseUrl.replace(/\/+$/, '')}${req.resourceType ? '/' + req.resourceType : ''}`;
  const base = req.params.filter(([k]) => k !== '_offset' && k !== '_count' && k !== '_cursor');
  const link = (extra: Array<[string, string]>): string => `${path}?${new URLSearchParams([...base, ['_count', String(count)], ...extra]).toString()}`;
  const url = (o: number): string => link([['_offset', String(o)]]);
  const cursor = req.params.find(([k]) => k === '_cursor')?.[1];
  const links: BundleLink[] = [
    { relation: 'self', url: cursor ? link([['_cursor', cursor]]) : url(offset) },
    { relation: 'first', url: url(0) },
  ];
  // keyset pages have no cheap way back; offset pages do
  if (offset > 0) links.push({ relation: 'previous', url: url(Math.max(0, offset - count)) });
  if (hasNext) links.push({ relation: 'next', url: nextCursor ? link([['_cursor', nextCursor]]) : url(offset + count) });
  return links;
}

export async function runSearch(db: Queryable, req: SearchRequest): Promise<Bundle> {
  const requested = requestTypes(req);
  const parsed = parseSearch(requested, req.params);
  if (parsed.unknown.length && req.handling === 'strict') {
    throw badRequest(parsed.unknown.map(([, msg]) => msg).join('; '), parsed.unknown[0][0]);
  }
  const maxCount = req.maxCount ?? MAX_COUNT;
  const count = Math.min(parsed.count ?? req.defaultCount ?? DEFAULT_COUNT, maxCount);
  const types = visibleTypes(requested, req.access);
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset' };
  const entries: BundleEntry[] = [];
  let matches: Row[] = [];
  let hasNext = false;
  let nextCursor: string | undefined;
  let q: MatchQuery | undefined;
  if (types.length) {
    const countOnly = parsed.summary === 'count' || count === 0;
    if (!countOnly) {
      const mode = keysetMode(parsed, types);
      if (parsed.cursor && !mode) throw badRequest('_cursor cannot be used with this _sort or _type; use _offset', '_cursor');
      if (mode) {
        const page = await keysetPage(db, parsed, types, req, count, mode);
        matches = page.rows.slice(0, count);
        hasNext = page.rows.length > count;
        nextCursor = page.next;
      } else {
        const rows = await matchPage(db, parsed, types, req, count);
        matches = rows.slice(0, count);
        hasNext = rows.length > count;
      }
    }
    const totalMode = parsed.total ?? (countOnly ? 'accurate' : undefined);
    if (totalMode === 'accurate' || totalMode === 'estimate') {
      q = buildMatchQuery({ ...parsed, sort: [] }, types, req.access, req.baseUrl);
      bundle.total = await countMatches(db, q, totalMode);
    } else if (totalMode === undefined && !hasNext && !countOnly && !parsed.cursor && (matches.length > 0 || parsed.offset === 0)) {
      bundle.total = parsed.offset + matches.length;
    }
  } else if (parsed.total !== 'none') {
    bundle.total = 0;
  }
  const base = req.baseUrl.replace(/\/+$/, '');
  for (const row of matches) {
    const resource = applySummary(JSON.parse(row.content) as Resource, parsed.summary, parsed.elements);
    entries.push({ fullUrl: `${base}/${row.resource_type}/${row.id}`, resource, search: { mode: 'match' } });
  }
  if (matches.length && (parsed.include.length || parsed.revinclude.length)) {
    const included = await loadIncludes(db, parsed, matches, req.access);
    for (const row of included) {
      entries.push({
        fullUrl: `${base}/${row.resource_type}/${row.id}`,
        resource: JSON.parse(row.content) as Resource,
        search: { mode: 'include' },
      });
    }
  }
  if (parsed.unknown.length) {
    const oo: OperationOutcome = {
      resourceType: 'OperationOutcome',
      issue: parsed.unknown.map(([name, msg]) => ({
        severity: 'warning',
        code: 'not-supported',
        diagnostics: `${msg}; parameter ignored`,
        expression: [name],
      })),
    };
    entries.push({ resource: oo, search: { mode: 'outcome' } });
  }
  bundle.link = pageLinks(req, parsed.offset, count, hasNext, nextCursor);
  if (entries.length) bundle.entry = entries;
  return bundle;
}

type Key = string; // `${type}/${id}`

/** Ids of matches for conditional interactions (strict: an unknown parameter is an error, never ignored). */
export async function runSearchIds(db: Queryable, resourceType: string, params: Array<[string, string]>, limit: number): Promise<string[]> {
  return (await runSearchIdsMany(db, [{ resourceType, params }], limit))[0];
}

/**
 * Several id searches in one statement (one round trip), each answering at most `limit` ids in id order.
 * A malformed search throws with `searchIndex` saying which one.
 */
export async function runSearchIdsMany(
  db: Queryable,
  searches: Array<{ resourceType: string; params: Array<[string, string]> }>,
  limit: number,
): Promise<string[][]> {
  if (searches.length === 0) return [];
  const sql = new Sql();
  const parts = searches.map(({ resourceType, params }, k) => {
    try {
      if (paramsOf(resourceType).size === 0) throw badRequest(`Unknown resource type "${resourceType}"`);
      const parsed = parseSearch([resourceType], params);
      if (parsed.unknown.length) throw badRequest(parsed.unknown.map(([, m]) => m).join('; '), parsed.unknown[0][0]);
      const q = buildMatchQuery({ ...parsed, sort: [] }, [resourceType], undefined, '', 'left', sql);
      return `(SELECT ${k} AS k, r.id FROM ${q.from} WHERE ${q.where} ORDER BY r.id LIMIT ${Math.max(0, Math.trunc(limit))})`;
    } catch (err) {
      throw Object.assign(err as Error, { searchIndex: k });
    }
  });
  const rows = await db.query<{ k: number; id: string }>(parts.join(' UNION ALL '), sql.params);
  const out: string[][] = searches.map(() => []);
  for (const r of rows.rows) out[Number(r.k)].push(r.id);
  return out;
}

async function loadByKeys(db: Queryable, keys: Key[], access: SearchAccess | undefined): Promise<Row[]> {
  if (keys.length === 0) return [];
  const pairs = keys.map((k) => k.split('/'));
  const byType = new Map<string, string[]>();
  for (const [t, id] of pairs) byType.set(t, [...(byType.get(t) ?? []), id]);
  const types = visibleTypes([...byType.keys()], access);
  if (types.length === 0) return [];
  const sql = new Sql();
  const conds = accessConditions(access, types, sql);
  const typeArr: string[] = [];
  const idArr: string[] = [];
  for (const t of types) for (const id of byType.get(t)!) {
    typeArr.push(t);
    idArr.push(id);
  }
  const rows = await db.query<Row>(
    `SELECT r.resource_type, r.id, r.content FROM resource r
     JOIN unnest(${sql.p(typeArr)}::text[], ${sql.p(idArr)}::text[]) AS k(rt, rid) ON r.resource_type = k.rt AND r.id = k.rid
     WHERE NOT r.deleted${conds.map((c) => ` AND ${c}`).join('')}
     ORDER BY r.resource_type, r.id`,
    sql.params,
  );
  return rows.rows;
}

/** The reference rows of an include spec's parameter (an alias such as `Observation:patient` reads `subject`). */
function refCond(spec: IncludeSpec, sql: Sql): string {
  const def = spec.sourceType !== '*' ? paramOf(spec.sourceType, spec.param) : undefined;
  return def ? storageCond(def, sql) : `code = ${sql.p(spec.param)}`;
}

/** Targets of `_include` specs whose source type is among `rows`. */
async function includeTargets(db: Queryable, specs: IncludeSpec[], rows: Row[]): Promise<Set<Key>> {
  const out = new Set<Key>();
  for (const spec of specs) {
    const sources = rows.filter((r) => spec.sourceType === '*' || r.resource_type === spec.sourceType);
    if (sources.length === 0) continue;
    const sql = new Sql();
    const conds = [
      `(resource_type, id) IN (SELECT * FROM unnest(${sql.p(sources.map((r) => r.resource_type))}::text[], ${sql.p(sources.map((r) => r.id))}::text[]))`,
      'target_type IS NOT NULL',
    ];
    if (spec.param !== '*') conds.push(refCond(spec, sql));
    if (spec.targetType) conds.push(`target_type = ${sql.p(spec.targetType)}`);
    const res = await db.query<{ target_type: string; target_id: string }>(
      `SELECT DISTINCT target_type, target_id FROM search_reference WHERE ${conds.join(' AND ')}`,
      sql.params,
    );
    for (const r of res.rows) out.add(`${r.target_type}/${r.target_id}`);
  }
  return out;
}

/** Resources of `_revinclude` specs that refer to one of `rows`. */
async function revincludeSources(db: Queryable, specs: IncludeSpec[], rows: Row[]): Promise<Set<Key>> {
  const out = new Set<Key>();
  for (const spec of specs) {
    const sql = new Sql();
    const conds = [
      `(target_type, target_id) IN (SELECT * FROM unnest(${sql.p(rows.map((r) => r.resource_type))}::text[], ${sql.p(rows.map((r) => r.id))}::text[]))`,
    ];
    if (spec.sourceType !== '*') conds.push(`resource_type = ${sql.p(spec.sourceType)}`);
    if (spec.param !== '*') conds.push(refCond(spec, sql));
    const res = await db.query<{ resource_type: string; id: string }>(
      `SELECT DISTINCT resource_type, id FROM search_reference WHERE ${conds.join(' AND ')}`,
      sql.params,
    );
    for (const r of res.rows) out.add(`${r.resource_type}/${r.id}`);
  }
  return out;
}

async function loadIncludes(db: Queryable, parsed: ParsedSearch, matches: Row[], access: SearchAccess | undefined): Promise<Row[]> {
  const seen = new Set<Key>(matches.map((r) => `${r.resource_type}/${r.id}`));
  const fresh = (keys: Set<Key>): Key[] => [...keys].filter((k) => !seen.has(k));
  const first = new Set<Key>([
    ...(await includeTargets(db, parsed.include.filter((s) => !s.iterate || s.sourceType === '*' || parsed.types.includes(s.sourceType)), matches)),
    ...(await revincludeSources(db, parsed.revinclude, matches)),
  ]);
  const level1 = await loadByKeys(db, fresh(first), access);
  for (const r of level1) seen.add(`${r.resource_type}/${r.id}`);
  const iterInc = parsed.include.filter((s) => s.iterate);
  const iterRev = parsed.revinclude.filter((s) => s.iterate);
  if (!level1.length || (!iterInc.length && !iterRev.length)) return level1;
  // :iterate — one more level, applied to what the first level included
  const second = new Set<Key>([
    ...(await includeTargets(db, iterInc, level1)),
    ...(await revincludeSources(db, iterRev, level1)),
  ]);
  const level2 = await loadByKeys(db, fresh(second), access);
  return [...level1, ...level2];
}
