/**
 * Rewrites the search index rows of stored resources (after an upgrade that indexes more, e.g. `:identifier`
 * rows, or after a search parameter change). Keys are streamed from a cursor; each batch re-reads its resources
 * under `FOR UPDATE` in its own transaction, so a write racing the reindex is never indexed from stale content.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Database } from '../../db/database.js';
import { badRequest } from '../outcome.js';
import { isResourceType } from '../validation.js';
import { extractIndexRows } from './extract.js';
import { initSearchDefinitions } from './index.js';
import { buildIndexStatement } from './writer.js';

export interface ReindexResult {
  resources: number;
  byType: Record<string, number>;
}

export async function reindex(db: Database, opts: { type?: string; batchSize?: number } = {}): Promise<ReindexResult> {
  if (opts.type !== undefined && !isResourceType(opts.type)) throw badRequest(`Unknown resource type "${opts.type}"`, 'type');
  initSearchDefinitions();
  const batchSize = opts.batchSize ?? 500;
  const result: ReindexResult = { resources: 0, byType: {} };
  const keys = db.cursor<{ resource_type: string; id: string }>(
    `SELECT resource_type, id FROM resource WHERE NOT deleted${opts.type ? ' AND resource_type = $1' : ''} ORDER BY resource_type, id`,
    opts.type ? [opts.type] : [],
    batchSize,
  );
  for await (const batch of keys) {
    await db.transaction(async (tx) => {
      const rows = await tx.query<{ resource_type: string; id: string; content: string }>(
        `SELECT r.resource_type, r.id, r.content FROM resource r
           JOIN unnest($1::text[], $2::text[]) AS k(rt, rid) ON r.resource_type = k.rt AND r.id = k.rid
          WHERE NOT r.deleted ORDER BY r.resource_type, r.id FOR UPDATE OF r`,
        [batch.map((k) => k.resource_type), batch.map((k) => k.id)],
      );
      const items = rows.rows.map((r) => ({ resourceType: r.resource_type, id: r.id, rows: extractIndexRows(JSON.parse(r.content) as Resource) }));
      const { sql, params } = buildIndexStatement(items, true);
      await tx.query(sql, params);
      for (const r of rows.rows) result.byType[r.resource_type] = (result.byType[r.resource_type] ?? 0) + 1;
      result.resources += rows.rows.length;
    });
  }
  return result;
}
