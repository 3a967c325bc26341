/**
 * Reads of several resources of one type in one round trip, for in-process callers that build from many at once
 * (an outbound ORU with 20 results would otherwise cost 20 reads). Exposed through Repository.readMany/readLatest.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../db/database.js';
import { assertResourceType } from './validation.js';

/** The current, not deleted resources among `ids`, in the order of `ids`; unknown and deleted ids are left out. */
export async function readMany<T extends Resource>(q: Queryable, resourceType: string, ids: string[]): Promise<T[]> {
  assertResourceType(resourceType);
  if (ids.length === 0) return [];
  const res = await q.query<{ id: string; content: string }>(
    'SELECT id, content FROM resource WHERE resource_type = $1 AND id = ANY($2::text[]) AND NOT deleted',
    [resourceType, ids],
  );
  const byId = new Map(res.rows.map((r) => [r.id, JSON.parse(r.content) as T]));
  return ids.map((id) => byId.get(id)).filter((r): r is T => r !== undefined);
}

/**
 * The current version of each resource, or for a deleted one its last version before the deletion (what a
 * receiver was last sent). Ids that never existed are left out.
 */
export async function readLatest<T extends Resource>(q: Queryable, resourceType: string, ids: string[]): Promise<Map<string, { resource: T; deleted: boolean }>> {
  assertResourceType(resourceType);
  const out = new Map<string, { resource: T; deleted: boolean }>();
  if (ids.length === 0) return out;
  const cur = await q.query<{ id: string; deleted: boolean; content: string | null }>(
    'SELECT id, deleted, content FROM resource WHERE resource_type = $1 AND id = ANY($2::text[])',
    [resourceType, ids],
  );
  const gone: string[] = [];
  for (const r of cur.rows) {
    if (r.deleted || r.content === null) gone.push(r.id);
    else out.set(r.id, { resource: JSON.parse(r.content) as T, deleted: false });
  }
  if (gone.length) {
    const hist = await q.query<{ id: string; content: string }>(
      `SELECT DISTINCT ON (id) id, content FROM resource_history
        WHERE resource_type = $1 AND id = ANY($2::text[]) AND NOT deleted AND content IS NOT NULL
        ORDER BY id, version_id DESC`,
      [resourceType, gone],
    );
    for (const r of hist.rows) out.set(r.id, { resource: JSON.parse(r.content) as T, deleted: true });
  }
  return out;
}
