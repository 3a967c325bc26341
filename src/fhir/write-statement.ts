/**
 * The one statement that writes new versions: history rows, current rows and every search-index row of any number
 * of resources in one CTE (one round trip, atomic on its own). Used by the repository for a lone write and for a
 * transaction's writes together.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../db/database.js';
import { conflict } from './outcome.js';
import { indexResourcesCtes, patientCompartmentsOf } from './search/index.js';

export interface VersionToWrite {
  resource: Resource;
  versionId: number;
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  json: string;
}

export async function writeVersions(tx: Queryable, items: VersionToWrite[]): Promise<void> {
  const col = <V>(f: (i: VersionToWrite) => V): V[] => items.map(f);
  const params: unknown[] = [
    col((i) => i.resource.resourceType),
    col((i) => i.resource.id),
    col((i) => i.versionId),
    col((i) => i.resource.meta!.lastUpdated),
    col((i) => i.method),
    col((i) => i.json),
    col((i) => pgTextArray(patientCompartmentsOf(i.resource))),
  ];
  const indexCtes = indexResourcesCtes(col((i) => i.resource), params);
  await tx.query(
    `WITH u AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::text[], $7::text[])
         AS u(resource_type, id, version_id, last_updated, method, content, compartments)),
     h AS (
       INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted, method, content)
       SELECT resource_type, id, version_id, last_updated, false, method, content FROM u
       RETURNING resource_type, id, seq),
     r AS (
       INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, compartments, seq)
       SELECT u.resource_type, u.id, u.version_id, u.last_updated, false, u.content, u.compartments::text[], h.seq
         FROM u JOIN h ON h.resource_type = u.resource_type AND h.id = u.id
       ON CONFLICT (resource_type, id) DO UPDATE SET
         version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated, deleted = false,
         content = EXCLUDED.content, compartments = EXCLUDED.compartments, seq = EXCLUDED.seq)
     ${indexCtes.map((c) => `, ${c}`).join('\n')}
     SELECT 1`,
    params,
  ).catch((err: { code?: string; message: string; detail?: string }) => {
    // Two writers creating the same client-assigned id at once: the loser retries as an update.
    if (err.code === '23505') {
      const what = items.length === 1 ? `${items[0].resource.resourceType}/${items[0].resource.id} was` : `a resource of this transaction was (${err.detail ?? err.message})`;
      throw conflict(`${what} written concurrently; retry`);
    }
    throw err;
  });
}

/** A PostgreSQL array literal of `values`, for a text[] column fed through unnest (which cannot carry ragged arrays). */
function pgTextArray(values: string[]): string {
  return `{${values.map((v) => `"${v.replace(/["\\]/g, '\\$&')}"`).join(',')}}`;
}
