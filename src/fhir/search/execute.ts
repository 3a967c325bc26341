/**
 * Runs a search: resolves the types, cuts a page of matches (paging.ts, planned by plan.ts), counts when asked,
 * adds `_include`/`_revinclude` (include.ts), all under the caller's access rules (access.ts); and the id-only
 * searches of conditional interactions.
 */
import type { Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../../db/database.js';
import { badRequest } from '../outcome.js';
import type { SearchRequest } from './index.js';
import { paramsOf } from './definitions.js';
import { parseSearch } from './parse.js';
import { Sql } from './query.js';
import { applySummary } from './summary.js';
import { allResourceTypes } from './types.js';
import { visibleTypes } from './access.js';
import { buildMatchQuery, countMatches } from './plan.js';
import type { MatchQuery, Row } from './plan.js';
import { keysetMode, keysetPage, matchPage, pageLinks, timelineKeysetPage } from './paging.js';
import { planTimeline } from './timeline.js';
import { loadIncludes } from './include.js';

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 1000;

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
      const plan = planTimeline(parsed, types, req.access, req.baseUrl);
      if (plan) {
        const page = await timelineKeysetPage(db, parsed, plan, count);
        matches = page.rows.slice(0, count);
        hasNext = page.rows.length > count;
        nextCursor = page.next;
      } else if (mode) {
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
