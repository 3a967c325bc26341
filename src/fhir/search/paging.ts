/**
 * Pages of matches: by offset, or by keyset cursor (`_cursor` in the next link) for the orders that are an
 * index walk; and the Bundle's paging links.
 */
import type { BundleLink } from '@medplum/fhirtypes';
import type { Queryable } from '../../db/database.js';
import { badRequest } from '../outcome.js';
import type { SearchRequest } from './index.js';
import type { ParsedSearch } from './parse.js';
import { buildMatchQuery, countMatches, fetchPage, hasSortRows } from './plan.js';
import type { MatchQuery, Row } from './plan.js';
import { timelinePage } from './timeline.js';
import type { TimelinePlan } from './timeline.js';

/**
 * One page of matches (count + 1 rows, to know whether a next page exists). When the first sort key has
 * sort rows, resources having it are paged from its index and the ones lacking it follow.
 */
export async function matchPage(
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

export interface Cursor {
  /** The `_sort` the cursor was made for; a cursor is only valid for the same order. */
  sort: string;
  phase: 'a' | 'b';
  key: string | null;
  id: string;
}

export const sortSignature = (parsed: ParsedSearch): string => parsed.sort.map((k) => `${k.descending ? '-' : ''}${k.def.code}`).join(',');

export function keysetMode(parsed: ParsedSearch, types: string[]): 'id' | 'sortrows' | undefined {
  if (types.length !== 1 || parsed.offset > 0) return undefined;
  if (parsed.sort.length === 0) return 'id';
  if (parsed.sort.length === 1 && !parsed.sort[0].def.column && hasSortRows(parsed.sort[0].def)) return 'sortrows';
  return undefined;
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.sort, c.phase, c.key, c.id])).toString('base64url');
}

export function decodeCursor(value: string, parsed: ParsedSearch): Cursor {
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
export async function keysetPage(
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

export function pageLinks(req: SearchRequest, offset: number, count: number, hasNext: boolean, nextCursor?: string): BundleLink[] {
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

/** A keyset page planned on the timeline index (timeline.ts); its cursors are those of `keysetPage`. */
export async function timelineKeysetPage(
  db: Queryable,
  parsed: ParsedSearch,
  plan: TimelinePlan,
  count: number,
): Promise<{ rows: Row[]; next?: string }> {
  const cursor = parsed.cursor ? decodeCursor(parsed.cursor, parsed) : undefined;
  const rows = await timelinePage(db, plan, cursor, count);
  if (rows.length <= count) return { rows };
  const last = rows[count - 1];
  const key = last.phase === 'a' ? (last.sort_key ?? null) : null;
  return { rows, next: encodeCursor({ sort: sortSignature(parsed), phase: last.phase, key, id: last.id }) };
}
