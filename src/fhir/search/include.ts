/** `_include` and `_revinclude`: the targets and sources of a page's matches through the reference index. */
import type { Queryable } from '../../db/database.js';
import type { SearchAccess } from './index.js';
import { paramOf } from './definitions.js';
import type { IncludeSpec, ParsedSearch } from './parse.js';
import { Sql, storageCond } from './query.js';
import { accessConditions, visibleTypes } from './access.js';
import type { Row } from './plan.js';

type Key = string; // `${type}/${id}`

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

export async function loadIncludes(db: Queryable, parsed: ParsedSearch, matches: Row[], access: SearchAccess | undefined): Promise<Row[]> {
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
