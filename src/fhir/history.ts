import type { Bundle, BundleEntry, BundleLink, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../db/database.js';
import { badRequest } from './outcome.js';
import { Sql } from './search/query.js';
import type { SearchParams } from './repository.js';

export interface HistoryRequest {
  resourceType?: string;
  id?: string;
  params: SearchParams;
  /** FHIR base, e.g. http://localhost:8080/fhir */
  baseUrl: string;
  /** URL of this request relative to the base (for links), e.g. "Patient/_history". */
  path: string;
  defaultCount: number;
  maxCount: number;
  /** Patient compartments the caller is confined to, if any… */
  patientCompartments?: string[];
  /** …except for these types (granted by user/ or system/ scopes beside patient/ ones). */
  compartmentExempt?: Set<string> | '*';
  /** Types the caller may see (system/type level), if restricted. */
  allowedTypes?: Set<string>;
}

interface HistoryRow {
  seq: number;
  resource_type: string;
  id: string;
  version_id: number;
  last_updated: Date;
  deleted: boolean;
  method: string;
  content: string | null;
}

/** `2024`, `2024-05`, `2024-05-06`, or a full dateTime → [start, end) of what it denotes. */
export function instantRange(value: string, name: string): [Date, Date] {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.exec(value);
  if (!m) throw badRequest(`Invalid ${name} "${value}": expected a FHIR date or instant`, name);
  const [, y, mo, d, hh, mm] = m;
  if (hh === undefined) {
    const start = new Date(Date.UTC(Number(y), mo ? Number(mo) - 1 : 0, d ? Number(d) : 1));
    const end = new Date(start);
    if (d) end.setUTCDate(end.getUTCDate() + 1);
    else if (mo) end.setUTCMonth(end.getUTCMonth() + 1);
    else end.setUTCFullYear(end.getUTCFullYear() + 1);
    return [start, end];
  }
  const t = new Date(value.length === 16 ? `${value}:00Z` : m[7] ? value : `${value}Z`);
  if (Number.isNaN(t.getTime()) || mm === undefined) throw badRequest(`Invalid ${name} "${value}"`, name);
  return [t, new Date(t.getTime() + (m[6] ? 1000 : 60_000))];
}

/**
 * History at instance, type or system level, newest first. Paging is keyset on the global change
 * sequence (`_page` = the last seq seen), so pages stay stable while writes continue.
 */
export async function readHistory(q: Queryable, req: HistoryRequest): Promise<Bundle> {
  const where: string[] = [];
  const bind = new Sql();
  const arg = (v: unknown) => bind.p(v);
  if (req.resourceType) where.push(`h.resource_type = ${arg(req.resourceType)}`);
  if (req.id) where.push(`h.id = ${arg(req.id)}`);
  if (req.allowedTypes) where.push(`h.resource_type = ANY(${arg([...req.allowedTypes])})`);
  if (req.patientCompartments && req.compartmentExempt !== '*') {
    // A version is visible when the resource is (currently) in one of the caller's compartments.
    const inCompartment = `EXISTS (SELECT 1 FROM resource r WHERE r.resource_type = h.resource_type AND r.id = h.id
                AND (r.compartments && ${arg(req.patientCompartments)}::text[]))`;
    where.push(req.compartmentExempt?.size ? `(h.resource_type = ANY(${arg([...req.compartmentExempt])}::text[]) OR ${inCompartment})` : inCompartment);
  }
  let count = req.defaultCount;
  const links: Array<[string, string]> = [];
  for (const [name, value] of req.params) {
    switch (name) {
      case '_since':
        where.push(`h.last_updated >= ${arg(instantRange(value, '_since')[0])}`);
        links.push([name, value]);
        break;
      case '_at': {
        // Versions current at some point during the period of `_at`: created before it ends, and not
        // superseded before it starts.
        const [start, end] = instantRange(value, '_at');
        where.push(`h.last_updated < ${arg(end)}`);
        where.push(`NOT EXISTS (SELECT 1 FROM resource_history n WHERE n.resource_type = h.resource_type AND n.id = h.id
                    AND n.version_id > h.version_id AND n.last_updated <= ${arg(start)})`);
        links.push([name, value]);
        break;
      }
      case '_count': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 0) throw badRequest(`Invalid _count "${value}"`, '_count');
        count = Math.min(n, req.maxCount);
        break;
      }
      case '_page': {
        const n = Number(value);
        if (!Number.isInteger(n)) throw badRequest(`Invalid _page "${value}"`, '_page');
        where.push(`h.seq < ${arg(n)}`);
        break;
      }
      case '_format':
      case '_pretty':
        break;
      default:
        throw badRequest(`Unsupported history parameter "${name}"`, name);
    }
  }
  const sql = `SELECT h.seq, h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.method, h.content
                 FROM resource_history h ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
                ORDER BY h.seq DESC LIMIT ${count + 1}`;
  const rows = (await q.query<HistoryRow>(sql, bind.params)).rows;
  const page = rows.slice(0, count);
  const base = `${req.baseUrl}/${req.path}`;
  const linkUrl = (extra: Array<[string, string]>) =>
    `${base}?${new URLSearchParams([...links, ['_count', String(count)], ...extra]).toString()}`;
  const link: BundleLink[] = [{ relation: 'self', url: linkUrl(req.params.filter(([k]) => k === '_page')) }];
  if (rows.length > count && page.length > 0) {
    link.push({ relation: 'next', url: linkUrl([['_page', String(page[page.length - 1].seq)]]) });
  }
  const entry: BundleEntry[] = page.map((row) => historyEntry(req.baseUrl, row));
  return { resourceType: 'Bundle', type: 'history', link, entry };
}

function historyEntry(baseUrl: string, row: HistoryRow): BundleEntry {
  const url = `${row.resource_type}/${row.id}`;
  const lastModified = new Date(row.last_updated).toISOString();
  const status = row.deleted ? '204 No Content' : row.version_id === 1 ? '201 Created' : '200 OK';
  return {
    fullUrl: `${baseUrl}/${url}`,
    ...(row.content ? { resource: JSON.parse(row.content) as Resource } : {}),
    request: { method: row.method as 'POST', url: row.method === 'POST' ? row.resource_type : url },
    response: { status, etag: `W/"${row.version_id}"`, lastModified },
  };
}
