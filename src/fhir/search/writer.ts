/**
 * Writes a resource's index rows. Everything happens in ONE statement (data-modifying CTEs): the old rows of
 * the resource are deleted and the new ones inserted from parallel arrays (unnest), one INSERT per table.
 * CTEs run on the same snapshot, so the DELETEs never see the rows inserted beside them.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Tx } from '../../db/database.js';
import { extractIndexRows } from './extract.js';
import type { IndexRows } from './extract.js';
import { pgTimestamp } from './values.js';

export const INDEX_TABLES = [
  'search_token',
  'search_string',
  'search_date',
  'search_quantity',
  'search_reference',
  'search_uri',
  'search_composite',
  'search_sort',
  'search_timeline',
] as const;

interface Column {
  name: string;
  type: string;
}

export interface TableSpec {
  table: (typeof INDEX_TABLES)[number];
  columns: Column[];
  values: (rows: IndexRows) => unknown[][];
}

const t = (name: string, type = 'text'): Column => ({ name, type });
const num = (n: number | null): string | null => (n === null ? null : String(n));
const ts = (d: Date | null): string | null => (d === null ? null : pgTimestamp(d));

/** Each index table's columns (after resource_type, id) and the rows of an extraction in their text form. */
export const SPECS: TableSpec[] = [
  {
    table: 'search_token',
    columns: [t('code'), t('system'), t('value')],
    values: (r) => r.token,
  },
  {
    table: 'search_string',
    columns: [t('code'), t('value'), t('raw')],
    values: (r) => r.string,
  },
  {
    table: 'search_date',
    columns: [t('code'), t('low', 'timestamptz'), t('high', 'timestamptz')],
    values: (r) => r.date.map(([c, l, h]) => [c, pgTimestamp(l), pgTimestamp(h)]),
  },
  {
    table: 'search_quantity',
    columns: [t('code'), t('low', 'numeric'), t('high', 'numeric'), t('system'), t('unit')],
    values: (r) => r.quantity.map(([c, l, h, s, u]) => [c, num(l), num(h), s, u]),
  },
  {
    table: 'search_reference',
    columns: [t('code'), t('target_type'), t('target_id')],
    values: (r) => r.reference,
  },
  {
    table: 'search_uri',
    columns: [t('code'), t('value')],
    values: (r) => r.uri,
  },
  {
    table: 'search_composite',
    columns: [
      t('code'),
      t('c1_system'),
      t('c1_value'),
      t('t2_system'),
      t('t2_value'),
      t('n2_low', 'numeric'),
      t('n2_high', 'numeric'),
      t('n2_system'),
      t('n2_unit'),
      t('d2_low', 'timestamptz'),
      t('d2_high', 'timestamptz'),
      t('n3_low', 'numeric'),
      t('n3_high', 'numeric'),
    ],
    values: (r) =>
      r.composite.map((c) => [
        c.code,
        c.c1System,
        c.c1Value,
        c.t2System,
        c.t2Value,
        num(c.n2Low),
        num(c.n2High),
        c.n2System,
        c.n2Unit,
        ts(c.d2Low),
        ts(c.d2High),
        num(c.n3Low),
        num(c.n3High),
      ]),
  },
  {
    table: 'search_sort',
    columns: [t('code'), t('lo'), t('hi')],
    values: (r) => r.sort,
  },
  {
    table: 'search_timeline',
    columns: [
      t('subject_type'),
      t('subject_id'),
      t('code'),
      t('system'),
      t('value'),
      t('multi', 'boolean'),
      t('hi'),
      t('low', 'timestamptz'),
      t('high', 'timestamptz'),
    ],
    values: (r) => r.timeline.map(([st, sid, c, sys, v, multi, hi, low, high]) => [st, sid, c, sys, v, multi, hi, ts(low), ts(high)]),
  },
];

type IndexItem = { resourceType: string; id: string; rows: IndexRows };

/**
 * Builds the single statement that replaces the index rows of one or more resources.
 * `replace` = false skips the DELETEs (bulk loads of brand-new resources).
 */
export function buildIndexStatement(
  items: IndexItem[],
  replace: boolean,
): { sql: string; params: unknown[] } {
  const params: unknown[] = [];
  const ctes = buildIndexCtes(items, replace, params);
  if (ctes.length === 0) return { sql: 'SELECT 1', params: [] };
  return { sql: `WITH ${ctes.join(',\n')} SELECT 1`, params };
}

/**
 * The data-modifying CTEs that (re)write the index rows of `items`, numbering their parameters after those
 * already in `params` (which it appends to) — so a caller can fold them into its own statement.
 * `replace` says whose old rows to delete first: all, none, or those an item predicate picks.
 */
export function buildIndexCtes(items: IndexItem[], replace: boolean | ((item: IndexItem) => boolean), params: unknown[]): string[] {
  const p = (v: unknown): string => {
    params.push(v);
    return `$${params.length}`;
  };
  const ctes: string[] = [];
  const replaced = typeof replace === 'function' ? items.filter(replace) : replace ? items : [];
  if (replaced.length) {
    const types = p(replaced.map((i) => i.resourceType));
    const ids = p(replaced.map((i) => i.id));
    INDEX_TABLES.forEach((table, n) => {
      ctes.push(
        `d${n} AS (DELETE FROM ${table} x USING unnest(${types}::text[], ${ids}::text[]) AS k(rt, rid) ` +
          `WHERE x.resource_type = k.rt AND x.id = k.rid)`,
      );
    });
  }
  SPECS.forEach((spec, n) => {
    const rts: string[] = [];
    const rids: string[] = [];
    const cols: unknown[][] = spec.columns.map(() => []);
    for (const item of items) {
      for (const row of spec.values(item.rows)) {
        rts.push(item.resourceType);
        rids.push(item.id);
        row.forEach((v, i) => cols[i].push(v));
      }
    }
    if (rts.length === 0) return;
    const arrays = [p(rts) + '::text[]', p(rids) + '::text[]', ...spec.columns.map((c, i) => `${p(cols[i])}::${c.type}[]`)];
    ctes.push(
      `i${n} AS (INSERT INTO ${spec.table} (resource_type, id, ${spec.columns.map((c) => c.name).join(', ')}) ` +
        `SELECT * FROM unnest(${arrays.join(', ')}))`,
    );
  });
  return ctes;
}

export async function writeIndex(tx: Tx, resource: Resource): Promise<void> {
  if (!resource.id) throw new Error('indexResource: resource has no id');
  const rows = extractIndexRows(resource);
  // Version 1 is the first write of this id (the repository numbers versions per id, deletions included),
  // so there are no old rows to remove.
  const replace = resource.meta?.versionId !== '1';
  const { sql, params } = buildIndexStatement([{ resourceType: resource.resourceType, id: resource.id, rows }], replace);
  await tx.query(sql, params);
}

export async function deleteIndex(tx: Tx, resourceType: string, id: string): Promise<void> {
  const { sql, params } = buildIndexStatement([{ resourceType, id, rows: emptyRowsLocal() }], true);
  await tx.query(sql, params);
}

function emptyRowsLocal(): IndexRows {
  return { token: [], string: [], date: [], quantity: [], reference: [], uri: [], composite: [], sort: [], timeline: [] };
}
