/**
 * Searches by subject (+ one code or category value) (+ date filters), in id order or `_sort=-date`, planned on
 * search_timeline (migrations/090_search_timeline.sql) instead of the general index tables. Every statement
 * here walks one index in the order of its ORDER BY after an equality prefix, so the rows read follow the
 * page size, not the patient's depth nor anybody else's data, and no plan choice depends on statistics.
 * Anything else in the search (other filters, access criteria) is checked on each walked row.
 */
import type { Queryable } from '../../db/database.js';
import type { SearchAccess } from './index.js';
import { storage } from './definitions.js';
import type { Filter, ParsedSearch } from './parse.js';
import { Sql, filterCondition } from './query.js';
import { dateCondition, parseDateValue } from './value-conditions.js';
import { splitUnescaped, sortableDate, unescapeValue } from './values.js';
import { accessConditions, compartmentApplies } from './access.js';
import { ANY_CODE, TIMELINE } from './timeline-rows.js';
import type { Row } from './plan.js';
import type { Cursor } from './paging.js';

export interface TimelinePlan {
  type: string;
  subject: { type?: string; id: string };
  token: { code: string; system?: string; value: string };
  /** filters on the type's date parameter, answered from the timeline row */
  dates: Array<Extract<Filter, { kind: 'value' }>>;
  /** other filters, checked on the resource row */
  residual: Filter[];
  order: 'id' | 'date-desc';
  access?: SearchAccess;
}

/**
 * A check on another table as a scalar subquery evaluated per walked row. Written as EXISTS, PostgreSQL may turn
 * it into a semi-join or a hashed subplan (a scan of the whole other table) when its statistics suggest so; a
 * scalar subquery it can do neither with, so the walk stays the plan whatever the statistics say.
 */
export const probe = (fromWhere: string): string => `COALESCE((SELECT true FROM ${fromWhere} LIMIT 1), false)`;

/** Above this many matches in a date range, an id-order page walks the id index instead of sorting the range. */
export const RANGE_CAP = 500;

const REF = /^(?:([A-Z][A-Za-z]+)\/)?([A-Za-z0-9\-.]{1,64})$/;

/** The subject of a `subject`/`patient` filter with one plain reference, or undefined. */
function subjectOf(f: Filter, subjectCode: string, baseUrl: string): TimelinePlan['subject'] | undefined {
  if (f.kind !== 'value' || f.values.length !== 1 || f.def.type !== 'reference' || f.def.column) return undefined;
  const s = storage(f.def);
  if (s.codes.length !== 1 || s.codes[0] !== subjectCode) return undefined;
  if (f.modifier && !/^[A-Z]/.test(f.modifier)) return undefined;
  let ref = unescapeValue(f.values[0]);
  const base = baseUrl.replace(/\/+$/, '');
  if (base && ref.startsWith(base + '/')) ref = ref.slice(base.length + 1);
  const m = REF.exec(ref);
  if (!m) return undefined;
  const types = [m[1], f.modifier, s.targetType].filter((t): t is string => !!t);
  if (types.some((t) => t !== types[0])) return undefined; // contradictory: the general plan answers "nothing"
  return { type: types[0], id: m[2] };
}

/** A token filter with one `value` or `system|value` (both non-empty) on a timeline token parameter. */
function tokenOf(f: Filter, codes: string[]): TimelinePlan['token'] | undefined {
  if (f.kind !== 'value' || f.modifier || f.values.length !== 1 || f.def.type !== 'token' || f.def.alias) return undefined;
  if (!codes.includes(f.def.code)) return undefined;
  const parts = splitUnescaped(f.values[0], '|');
  if (parts.length === 1) return { code: f.def.code, value: unescapeValue(parts[0]) };
  const system = unescapeValue(parts[0]);
  const value = unescapeValue(parts.slice(1).join('|'));
  if (!system || !value) return undefined;
  return { code: f.def.code, system, value };
}

/** The timeline plan of a search, or undefined when the search is not of the shape it serves. */
export function planTimeline(parsed: ParsedSearch, types: string[], access: SearchAccess | undefined, baseUrl: string): TimelinePlan | undefined {
  if (types.length !== 1 || parsed.offset > 0) return undefined;
  const type = types[0];
  const spec = TIMELINE[type];
  if (!spec) return undefined;
  let order: TimelinePlan['order'];
  if (parsed.sort.length === 0) order = 'id';
  else if (parsed.sort.length === 1 && parsed.sort[0].descending && parsed.sort[0].def.code === spec.date && !parsed.sort[0].def.alias) order = 'date-desc';
  else return undefined;
  let subject: TimelinePlan['subject'] | undefined;
  let token: TimelinePlan['token'] | undefined;
  const dates: TimelinePlan['dates'] = [];
  const residual: Filter[] = [];
  for (const f of parsed.filters) {
    const s = !subject ? subjectOf(f, spec.subject, baseUrl) : undefined;
    if (s) {
      subject = s;
      continue;
    }
    const t = !token ? tokenOf(f, spec.tokens) : undefined;
    if (t) {
      token = t;
      continue;
    }
    if (f.kind === 'value' && f.def.code === spec.date && !f.def.alias && !f.modifier) dates.push(f);
    else residual.push(f);
  }
  if (!subject) return undefined;
  return { type, subject, token: token ?? { code: ANY_CODE, value: ANY_CODE }, dates, residual, order, access };
}

/** Equality prefix of the timeline indexes, the system check, and the date filters, on alias `t`. */
function timelineConds(plan: TimelinePlan, sql: Sql): string[] {
  const { type, subject, token } = plan;
  const conds = [
    `t.resource_type = ${sql.p(type)}`,
    `t.subject_id = ${sql.p(subject.id)}`,
    `t.code = ${sql.p(token.code)}`,
    `t.value = ${sql.p(token.value)}`,
  ];
  if (subject.type) conds.push(`t.subject_type = ${sql.p(subject.type)}`);
  if (token.system) {
    // the row keeps one system; a value coded under several (multi) is checked against every coding
    const s = sql.p(token.system);
    conds.push(
      `(t.system = ${s} OR (t.multi AND ${probe(
        `search_token x WHERE x.resource_type = t.resource_type AND x.id = t.id AND x.code = t.code AND x.system = ${s} AND x.value = t.value`,
      )}))`,
    );
  }
  const dateCode = TIMELINE[type].date;
  for (const f of plan.dates) {
    const onRow = f.values.map((v) => dateCondition(f, v, 't.low', 't.high', sql));
    const onIndex = f.values.map((v) => dateCondition(f, v, 'd.low', 'd.high', sql));
    const any = (c: string[]): string => (c.length === 1 ? c[0] : `(${c.join(' OR ')})`);
    // low/high are on the row when the date has one value; otherwise (several values, or none) search_date has them
    conds.push(
      `((t.low IS NOT NULL AND ${any(onRow)}) OR (t.low IS NULL AND ${probe(
        `search_date d WHERE d.resource_type = t.resource_type AND d.id = t.id AND d.code = ${sql.p(dateCode)} AND ${any(onIndex)}`,
      )}))`,
    );
  }
  return conds;
}

/**
 * The smallest `hi` a match can have, from date filters whose every value bounds it from below (eq, ge, gt, sa:
 * a matching value ends at or after the search range's start or end, and hi is the latest end): an index bound.
 */
function hiLowerBound(plan: TimelinePlan): string | undefined {
  let bound: string | undefined;
  for (const f of plan.dates) {
    // a filter bounds hi only if each of its (OR-ed) values does; then by the smallest of them
    const keys = f.values.map((v) => {
      const [prefix, range] = parseDateValue(f, v);
      const b = prefix === 'eq' || prefix === 'ge' ? range.low : prefix === 'gt' || prefix === 'sa' ? range.high : undefined;
      return b && sortableDate(b);
    });
    if (keys.some((k) => k === undefined)) continue;
    const fb = (keys as string[]).reduce((a, b) => (b < a ? b : a));
    if (bound === undefined || fb > bound) bound = fb;
  }
  return bound;
}

/** Conditions on the resource row `r`: the remaining filters and the access rules the subject does not imply. */
function residualConds(plan: TimelinePlan, sql: Sql): string[] {
  let access = plan.access;
  const { subject, type } = plan;
  if (access?.patientCompartments && compartmentApplies(access, type) && subject.type === 'Patient' && access.patientCompartments.includes(`Patient/${subject.id}`)) {
    // the subject's own compartment is granted: every row walked is in it (subject is a compartment parameter)
    access = { ...access, patientCompartments: undefined };
  }
  return [...plan.residual.map((f) => filterCondition(f, 'r', [type], sql)), ...accessConditions(access, [type], sql)];
}

type PageRow = Row & { sort_key?: string | null };

/**
 * Up to `limit` matches in the walk's order from `cursor`. `phase` 'a' walks the dated rows by (hi, id)
 * descending, 'b' walks in id order (all rows for order 'id', the undated ones for 'date-desc').
 */
async function walk(db: Queryable, plan: TimelinePlan, phase: 'a' | 'b', cursor: Cursor | undefined, limit: number): Promise<PageRow[]> {
  const sql = new Sql();
  const conds = timelineConds(plan, sql);
  const bound = hiLowerBound(plan);
  let orderBy: string;
  if (phase === 'a') {
    conds.push('t.hi IS NOT NULL');
    if (bound) conds.push(`t.hi >= ${sql.p(bound)}`);
    if (cursor?.phase === 'a') conds.push(`(t.hi, t.id) < (${sql.p(cursor.key)}, ${sql.p(cursor.id)})`);
    orderBy = 't.hi DESC, t.id DESC';
  } else {
    if (plan.order === 'date-desc') conds.push('t.hi IS NULL');
    if (cursor?.phase === 'b') conds.push(`t.id > ${sql.p(cursor.id)}`);
    orderBy = 't.id';
  }
  const residual = residualConds(plan, sql);
  // The walk is on the timeline alone and cut before the join, so no plan reads more index entries than it needs
  // for `limit` matches; conditions on the resource row are a per-row probe of it (see `probe`).
  if (residual.length) conds.push(probe(`resource r WHERE r.resource_type = t.resource_type AND r.id = t.id AND NOT r.deleted AND ${residual.join(' AND ')}`));
  const text =
    `SELECT r.resource_type, r.id, r.content, t.hi AS sort_key FROM (SELECT t.resource_type, t.id, ${phase === 'a' ? 't.hi' : 'NULL::text AS hi'} FROM search_timeline t ` +
    `WHERE ${conds.join(' AND ')} ORDER BY ${orderBy} LIMIT ${sql.p(limit)}) t ` +
    `JOIN resource r ON r.resource_type = t.resource_type AND r.id = t.id WHERE NOT r.deleted ORDER BY ${orderBy}`;
  return (await db.query<PageRow>(text, sql.params)).rows;
}

/**
 * An id-order page under a date range that bounds `hi` from below: the range's matches (read index-only from the
 * date index, at most RANGE_CAP + 1 entries) sorted by id. Undefined when the range holds more than RANGE_CAP
 * entries: then its matches are dense enough for the id walk to find a page within about depth / RANGE_CAP rows.
 * Two small statements rather than one: a statement holding both the range read and the join to `resource` was
 * estimated (for the branch it never runs) above PostgreSQL's JIT threshold.
 */
async function rangeById(db: Queryable, plan: TimelinePlan, bound: string, cursor: Cursor | undefined, limit: number): Promise<PageRow[] | undefined> {
  const sql = new Sql();
  const all = timelineConds(plan, sql);
  const key = [...all.slice(0, 4), `t.hi >= ${sql.p(bound)}`]; // the date index's equality prefix and range
  if (cursor?.phase === 'b') key.push(`t.id > ${sql.p(cursor.id)}`);
  // The inner read has only index conditions and is ordered like the date index: an index-only range scan of at
  // most RANGE_CAP + 1 entries, estimated cheap whatever the statistics; the other conditions are then evaluated
  // on those entries alone. (With them inside, a misestimate made the statement look costly enough for
  // PostgreSQL to JIT-compile it, 15–40 ms a query.)
  const range = await db.query<{ id: string; ok: boolean }>(
    `SELECT t.id, (${all.slice(4).join(' AND ') || 'true'}) AS ok FROM (SELECT t.resource_type, t.id, t.code, t.value, ` +
      `t.subject_type, t.system, t.multi, t.low, t.high FROM search_timeline t WHERE ${key.join(' AND ')} ` +
      `ORDER BY t.hi DESC, t.id DESC LIMIT ${RANGE_CAP + 1}) t`,
    sql.params,
  );
  if (range.rows.length > RANGE_CAP) return undefined;
  const matches = range.rows.filter((r) => r.ok);
  if (matches.length === 0) return [];
  const page = new Sql();
  const type = page.p(plan.type);
  const ids = page.p(matches.map((r) => r.id));
  const residual = residualConds(plan, page);
  const onResource = residual.length
    ? ` WHERE ${probe(`resource r WHERE r.resource_type = ${type} AND r.id = u.id AND NOT r.deleted AND ${residual.join(' AND ')}`)}`
    : '';
  // sorted by the database (its collation orders ids, as in every other page)
  const rows = await db.query<PageRow>(
    `SELECT r.resource_type, r.id, r.content FROM (SELECT u.id FROM unnest(${ids}::text[]) AS u(id)${onResource} ` +
      `ORDER BY u.id LIMIT ${page.p(limit)}) s JOIN resource r ON r.resource_type = ${type} AND r.id = s.id WHERE NOT r.deleted ORDER BY r.id`,
    page.params,
  );
  return rows.rows;
}

/** `count + 1` matches from `cursor` (to know whether there is a next page), each with the phase it came from. */
export async function timelinePage(
  db: Queryable,
  plan: TimelinePlan,
  cursor: Cursor | undefined,
  count: number,
): Promise<Array<PageRow & { phase: 'a' | 'b' }>> {
  const out: Array<PageRow & { phase: 'a' | 'b' }> = [];
  if (plan.order === 'date-desc') {
    if (cursor?.phase !== 'b') for (const r of await walk(db, plan, 'a', cursor, count + 1)) out.push({ ...r, phase: 'a' });
    // an undated resource cannot match a date filter
    if (out.length <= count && plan.dates.length === 0) {
      for (const r of await walk(db, plan, 'b', cursor, count + 1 - out.length)) out.push({ ...r, phase: 'b' });
    }
    return out;
  }
  const bound = hiLowerBound(plan);
  const ranged = bound ? await rangeById(db, plan, bound, cursor, count + 1) : undefined;
  for (const r of ranged ?? (await walk(db, plan, 'b', cursor, count + 1))) out.push({ ...r, phase: 'b' });
  return out;
}
