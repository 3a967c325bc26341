/**
 * `Observation/$lastn`: for one patient, the latest `max` Observations of each code (optionally only codes
 * listed in `code`, only Observations in `category`), as a searchset Bundle, under the caller's access rules.
 * Planned on search_timeline: the patient's distinct codes are found by skipping through the index (one probe
 * per code), and each code's latest readings are a backward walk that stops after `max`, so the cost follows
 * codes × max, not the number of readings.
 */
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../../db/database.js';
import { badRequest } from '../outcome.js';
import type { SearchAccess } from './index.js';
import { initSearchDefinitions } from './definitions.js';
import { parseFilter } from './parse.js';
import { Sql } from './query.js';
import { splitUnescaped, unescapeValue } from './values.js';
import { accessConditions, visibleTypes } from './access.js';
import { planTimeline, probe } from './timeline.js';
import type { TimelinePlan } from './timeline.js';

export interface LastnRequest {
  params: Array<[string, string]>;
  baseUrl: string;
  access?: SearchAccess;
}

export const LASTN_MAX = 100;
const TYPE = 'Observation';
const KNOWN = new Set(['patient', 'subject', 'category', 'code', 'max', '_format', '_pretty']);

interface Token {
  system?: string;
  value: string;
}

function tokens(name: string, raw: string): Token[] {
  return raw.split(',').map((v) => {
    const parts = splitUnescaped(v, '|');
    if (parts.length === 1 && parts[0]) return { value: unescapeValue(parts[0]) };
    const system = unescapeValue(parts[0]);
    const value = unescapeValue(parts.slice(1).join('|'));
    if (!system || !value) throw badRequest(`$lastn: "${name}" value "${v}" must be code or system|code`, name);
    return { system, value };
  });
}

/** Matches a row `alias` of search_timeline to one of `list` (system checked as the search does, see timeline.ts). */
function tokenCond(alias: string, list: Token[], sql: Sql): string {
  const one = (t: Token): string => {
    const v = `${alias}.value = ${sql.p(t.value)}`;
    if (!t.system) return v;
    const s = sql.p(t.system);
    const other = probe(
      `search_token x WHERE x.resource_type = ${alias}.resource_type AND x.id = ${alias}.id AND x.code = ${alias}.code AND x.system = ${s} AND x.value = ${alias}.value`,
    );
    return `(${v} AND (${alias}.system = ${s} OR (${alias}.multi AND ${other})))`;
  };
  return list.length === 1 ? one(list[0]) : `(${list.map(one).join(' OR ')})`;
}

function parseRequest(params: Array<[string, string]>, baseUrl: string): { plan: TimelinePlan; max: number; codes?: Token[]; categories?: Token[] } {
  for (const [name] of params) {
    if (!KNOWN.has(name)) throw badRequest(`$lastn does not take "${name}"; it takes patient (or subject), category, code and max`, name);
  }
  const get = (name: string): string | undefined => {
    const all = params.filter(([k]) => k === name);
    if (all.length > 1) throw badRequest(`$lastn takes "${name}" once (list several values separated by commas)`, name);
    return all[0]?.[1];
  };
  const subjects = (['patient', 'subject'] as const).filter((n) => get(n) !== undefined);
  if (subjects.length !== 1) throw badRequest('$lastn needs exactly one of "patient" or "subject"', 'patient');
  const name = subjects[0];
  const filter = parseFilter(TYPE, name, get(name)!);
  const plan = planTimeline({ types: [TYPE], filters: [filter], sort: [], offset: 0, include: [], revinclude: [], unknown: [] }, [TYPE], undefined, baseUrl);
  if (!plan) throw badRequest(`$lastn: "${name}" must be one reference (Patient/123 or 123)`, name);
  const maxRaw = get('max') ?? '1';
  const max = Number(maxRaw);
  if (!/^\d+$/.test(maxRaw) || max < 1 || max > LASTN_MAX) throw badRequest(`$lastn: "max" must be a whole number from 1 to ${LASTN_MAX}, got "${maxRaw}"`, 'max');
  const code = get('code');
  const category = get('category');
  return { plan, max, codes: code === undefined ? undefined : tokens('code', code), categories: category === undefined ? undefined : tokens('category', category) };
}

/** Runs `$lastn`; the caller has checked that it may search Observations. */
export async function runLastn(db: Queryable, req: LastnRequest): Promise<Bundle> {
  initSearchDefinitions();
  const { plan, max, codes, categories } = parseRequest(req.params, req.baseUrl);
  const base = req.baseUrl.replace(/\/+$/, '');
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'self', url: `${base}/${TYPE}/$lastn?${new URLSearchParams(req.params).toString()}` }] };
  if (visibleTypes([TYPE], req.access).length === 0) return { ...bundle, total: 0 };
  const sql = new Sql();
  const rt = sql.p(TYPE);
  const sid = sql.p(plan.subject.id);
  const key = `k.resource_type = ${rt} AND k.subject_id = ${sid} AND k.code = 'code'`;
  // the patient's distinct code values: each step is one index probe for the next value (a skip scan)
  const codeSet = codes
    ? `SELECT DISTINCT u AS v FROM unnest(${sql.p(codes.map((c) => c.value))}::text[]) AS u`
    : `SELECT v FROM codes WHERE v IS NOT NULL`;
  // each step of the skip scan is one ordered index probe (written as ORDER BY … LIMIT 1, not min(), which the
  // planner may answer by aggregating every row of the patient when its statistics are stale)
  const next = (after: string): string => `(SELECT k.value FROM search_timeline k WHERE ${key}${after} ORDER BY k.value LIMIT 1)`;
  const recursive = codes
    ? ''
    : `WITH RECURSIVE codes(v) AS (SELECT ${next('')} UNION ALL SELECT ${next(' AND k.value > codes.v')} FROM codes WHERE codes.v IS NOT NULL) `;
  const conds = [`t.resource_type = ${rt}`, `t.subject_id = ${sid}`, `t.code = 'code'`, 't.value = c.v', 't.hi IS NOT NULL'];
  if (plan.subject.type) conds.push(`t.subject_type = ${sql.p(plan.subject.type)}`);
  if (codes) conds.push(tokenCond('t', codes, sql));
  if (categories) {
    conds.push(
      probe(`search_timeline k WHERE k.resource_type = t.resource_type AND k.subject_id = t.subject_id AND k.code = 'category' AND k.id = t.id AND ${tokenCond('k', categories, sql)}`),
    );
  }
  const residual = accessConditions(req.access, [TYPE], sql);
  if (residual.length) conds.push(probe(`resource r WHERE r.resource_type = t.resource_type AND r.id = t.id AND NOT r.deleted AND ${residual.join(' AND ')}`));
  // per code, a backward walk of the date index cut at `max` before resources are read
  const text =
    `${recursive}SELECT r.resource_type, r.id, r.content FROM (${codeSet}) c CROSS JOIN LATERAL (` +
    `SELECT t.resource_type, t.id, t.hi FROM search_timeline t WHERE ${conds.join(' AND ')} ORDER BY t.hi DESC, t.id DESC LIMIT ${sql.p(max)}) l ` +
    `JOIN resource r ON r.resource_type = l.resource_type AND r.id = l.id WHERE NOT r.deleted ORDER BY c.v, l.hi DESC, l.id DESC`;
  const rows = (await db.query<{ resource_type: string; id: string; content: string }>(text, sql.params)).rows;
  const seen = new Set<string>();
  const entries: BundleEntry[] = [];
  for (const r of rows) {
    // an Observation coded with two values is among the latest of each; it is listed once
    if (seen.has(r.id)) continue;
    seen.add(r.id);
    entries.push({ fullUrl: `${base}/${r.resource_type}/${r.id}`, resource: JSON.parse(r.content) as Resource, search: { mode: 'match' } });
  }
  return { ...bundle, total: entries.length, ...(entries.length ? { entry: entries } : {}) };
}
