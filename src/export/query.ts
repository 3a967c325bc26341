/**
 * The SQL that reads one resource type as of the job's cut. Current rows written at or before the cut are
 * read as they are; rows changed after it (updated or deleted since kick-off) are read from their latest
 * history version at or before the cut, so the files show the store exactly as it was at transactionTime.
 */
import { Sql } from '../fhir/search/query.js';

export interface TypeQuery {
  sql: string;
  params: unknown[];
}

export interface TypeQueryOptions {
  type: string;
  cutSeq: number;
  since?: string;
  /**
   * undefined → no compartment restriction; 'any' → resources in some Patient compartment; a list → resources
   * in one of these compartments ('Patient/<id>').
   */
  compartments?: 'any' | string[];
  /** Also include these ids regardless of compartments (the Group of a Group export). */
  extraIds?: string[];
}

/**
 * Rows: `id`, `content` (the stored JSON) and `late`: true when the row came from history because the resource
 * changed after the cut. Compartments are stored only for current versions, so late rows are not filtered by
 * compartment here; the caller checks them from their content (they are few: only changes since kick-off).
 */
export function typeQuery(o: TypeQueryOptions): TypeQuery {
  const q = new Sql();
  const p = (v: unknown) => q.p(v);
  const type = p(o.type);
  const cut = p(o.cutSeq);
  const current: string[] = [`r.resource_type = ${type}`, `r.seq <= ${cut}`, 'NOT r.deleted'];
  const late: string[] = [`r.resource_type = ${type}`, `r.seq > ${cut}`, 'NOT h.deleted'];
  if (o.since) {
    const s = p(o.since);
    current.push(`r.last_updated > ${s}::timestamptz`);
    late.push(`h.last_updated > ${s}::timestamptz`);
  }
  let inCompartment: string | undefined;
  if (o.compartments === 'any') inCompartment = `r.compartments <> '{}'`;
  else if (o.compartments) inCompartment = `r.compartments && ${p(o.compartments)}::text[]`;
  if (inCompartment && o.extraIds?.length) inCompartment = `(${inCompartment} OR r.id = ANY(${p(o.extraIds)}::text[]))`;
  if (inCompartment) current.push(inCompartment);
  const sql = `SELECT r.id, r.content, false AS late FROM resource r WHERE ${current.join(' AND ')}
UNION ALL
SELECT r.id, h.content, true AS late FROM resource r
CROSS JOIN LATERAL (
  SELECT hh.content, hh.deleted, hh.last_updated FROM resource_history hh
  WHERE hh.resource_type = r.resource_type AND hh.id = r.id AND hh.seq <= ${cut}
  ORDER BY hh.version_id DESC LIMIT 1
) h
WHERE ${late.join(' AND ')}`;
  return { sql, params: q.params };
}

/**
 * The resources of a type whose state at the cut is a deletion made after `since` (rows `id`, and `previous`:
 * the version before the deletion, whose references say which Patient compartments it was in). Read from the
 * history by (resource_type, last_updated), so its cost follows the changes since `since`, not the type's size.
 */
export function deletedQuery(o: { type: string; cutSeq: number; since: string }): TypeQuery {
  return {
    sql: `SELECT h.id, p.content AS previous FROM resource_history h
LEFT JOIN resource_history p ON p.resource_type = h.resource_type AND p.id = h.id AND p.version_id = h.version_id - 1
WHERE h.resource_type = $1 AND h.deleted AND h.seq <= $2 AND h.last_updated > $3::timestamptz
  AND NOT EXISTS (SELECT 1 FROM resource_history n WHERE n.resource_type = h.resource_type AND n.id = h.id AND n.seq > h.seq AND n.seq <= $2)
ORDER BY h.id`,
    params: [o.type, o.cutSeq, o.since],
  };
}

/** Resource types present in the store, by a loose index scan over the primary key (fast on millions of rows). */
export const PRESENT_TYPES_SQL = `WITH RECURSIVE t AS (
  SELECT min(resource_type) AS rt FROM resource
  UNION ALL
  SELECT (SELECT min(resource_type) FROM resource WHERE resource_type > t.rt) FROM t WHERE t.rt IS NOT NULL
) SELECT rt FROM t WHERE rt IS NOT NULL`;
