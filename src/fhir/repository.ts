import { randomUUID } from 'node:crypto';
import type { Resource } from '@medplum/fhirtypes';
import type { Database, Queryable, Tx } from '../db/database.js';
import { badRequest, conflict, FhirError, gone, notFound, preconditionFailed } from './outcome.js';
import { assertValidResource, assertResourceType, assertValidId } from './validation.js';
import { indexResourceCtes, patientCompartmentsOf, removeResourceIndex, searchIds } from './search/index.js';
import { applyJsonPatch } from './patch.js';

export interface StoredVersion {
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdated: Date;
  deleted: boolean;
  /** Resource JSON as stored (meta included), or null for a deletion. */
  content: string | null;
}

export interface WriteResult<T extends Resource = Resource> {
  resource: T;
  /** 201 Created vs 200 OK. */
  created: boolean;
  /** The stored JSON text of `resource`, so responses need not re-serialise it. */
  json: string;
}

export interface DeleteResult {
  /** False when there was nothing to delete (already deleted or never existed). */
  deleted: boolean;
  versionId?: number;
}

/** A committed-with-the-write change, seen by hooks inside the writer's transaction (outbox, audit). */
export interface ChangeEvent {
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  resourceType: string;
  id: string;
  versionId: number;
  /** The new version; undefined for a deletion. */
  resource?: Resource;
  /** The version it replaced, if any. */
  previous?: Resource;
}

/**
 * Runs in the same transaction as the write: whatever it inserts (an outbox row, an audit row) commits or
 * rolls back together with the resource (DESIGN.md principle 3).
 */
export type ChangeHook = (tx: Tx, change: ChangeEvent) => Promise<void>;

/** Conditional queries arrive as the raw query string (`identifier=a|b&active=true`). */
export type SearchParams = Array<[string, string]>;

export function parseQuery(query: string): SearchParams {
  return [...new URLSearchParams(query)];
}

interface ResourceRow {
  version_id: number;
  deleted: boolean;
  content: string | null;
  last_updated: Date;
}

/**
 * The one place that writes resources. REST handlers, batch/transaction entries and facades all come
 * here, so versioning, validation, search indexing and compartments are applied once, in one transaction.
 * Every method takes an optional `tx`: inside a FHIR transaction the whole Bundle shares one.
 */
export class Repository {
  private readonly hooks: ChangeHook[] = [];

  constructor(readonly db: Database) {}

  /** Registers a hook run inside every write's transaction (e.g. the HL7 v2 outbound outbox). */
  onChange(hook: ChangeHook): void {
    this.hooks.push(hook);
  }

  private async emit(tx: Tx, change: ChangeEvent): Promise<void> {
    for (const hook of this.hooks) await hook(tx, change);
  }

  /** Runs `fn` in `tx` when given, otherwise in a new transaction. */
  private inTx<T>(tx: Tx | undefined, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return tx ? fn(tx) : this.db.transaction(fn);
  }

  async read(resourceType: string, id: string, q: Queryable = this.db): Promise<StoredVersion> {
    assertResourceType(resourceType);
    const r = await q.query<ResourceRow>(
      'SELECT version_id, deleted, content, last_updated FROM resource WHERE resource_type = $1 AND id = $2',
      [resourceType, id],
    );
    const row = r.rows[0];
    if (!row) throw notFound(`${resourceType}/${id} is not known`);
    const v = toVersion(resourceType, id, row);
    if (v.deleted) throw new FhirError(410, gone(`${resourceType}/${id} was deleted`).outcome, versionHeaders(v));
    return v;
  }

  async readResource<T extends Resource = Resource>(resourceType: string, id: string, q: Queryable = this.db): Promise<T> {
    return JSON.parse((await this.read(resourceType, id, q)).content as string) as T;
  }

  async vread(resourceType: string, id: string, versionId: string, q: Queryable = this.db): Promise<StoredVersion> {
    assertResourceType(resourceType);
    const vid = Number(versionId);
    if (!Number.isInteger(vid) || vid < 1) throw notFound(`${resourceType}/${id} has no version "${versionId}"`);
    const r = await q.query<ResourceRow>(
      `SELECT version_id, deleted, content, last_updated FROM resource_history
        WHERE resource_type = $1 AND id = $2 AND version_id = $3`,
      [resourceType, id, vid],
    );
    const row = r.rows[0];
    if (!row) throw notFound(`${resourceType}/${id} has no version ${vid}`);
    const v = toVersion(resourceType, id, row);
    if (v.deleted) throw new FhirError(410, gone(`${resourceType}/${id} version ${vid} is a deletion`).outcome, versionHeaders(v));
    return v;
  }

  /** Create with a server-assigned id; `ifNoneExist` makes it conditional (0 → create, 1 → existing, more → 412). */
  async create<T extends Resource>(
    resource: T,
    opts: { ifNoneExist?: string; tx?: Tx; /** pre-assigned by a transaction resolving urn:uuid references */ assignedId?: string } = {},
  ): Promise<WriteResult<T>> {
    assertResourceType(resource.resourceType);
    return this.inTx(opts.tx, async (tx) => {
      if (opts.ifNoneExist) {
        const existing = await this.findConditional(tx, resource.resourceType, opts.ifNoneExist, 'If-None-Exist');
        if (existing) {
          const v = await this.read(resource.resourceType, existing, tx);
          return { resource: JSON.parse(v.content as string) as T, created: false, json: v.content as string };
        }
      }
      return this.write(tx, { ...resource, id: opts.assignedId ?? randomUUID() }, 1, 'POST');
    });
  }

  /**
   * Update by id; creates the resource when the id is new (update-as-create).
   * `ifMatch` is the version the client last saw; a different current version is a 412.
   */
  async update<T extends Resource>(
    resource: T,
    opts: { ifMatch?: string; tx?: Tx; /** the id was just minted: skip locking a current version */ knownAbsent?: boolean } = {},
  ): Promise<WriteResult<T>> {
    assertResourceType(resource.resourceType);
    if (!resource.id) throw badRequest('Resource id is required for update', `${resource.resourceType}.id`);
    assertValidId(resource.id);
    return this.inTx(opts.tx, async (tx) => {
      const current = opts.knownAbsent ? undefined : await this.lockCurrent(tx, resource.resourceType, resource.id as string);
      checkIfMatch(opts.ifMatch, current, `${resource.resourceType}/${resource.id}`);
      if (current?.content && sameContent(JSON.parse(current.content) as Resource, resource)) {
        // A resend (an HL7 message replayed, a sync run twice) must not mint a new version per run.
        return { resource: JSON.parse(current.content) as T, created: false, json: current.content };
      }
      const next = current ? current.version_id + 1 : 1;
      const result = await this.write(tx, resource, next, 'PUT', current);
      return { ...result, created: !current || current.deleted };
    });
  }

  /** PUT Type?query: 0 matches → create (with the body's id, if any), 1 → update it, more → 412. */
  async conditionalUpdate<T extends Resource>(resource: T, query: string, opts: { tx?: Tx } = {}): Promise<WriteResult<T>> {
    assertResourceType(resource.resourceType);
    return this.inTx(opts.tx, async (tx) => {
      const id = await this.findConditional(tx, resource.resourceType, query, 'conditional update');
      if (!id) {
        if (resource.id) return this.update(resource, { tx });
        return this.create(resource, { tx });
      }
      if (resource.id && resource.id !== id) {
        throw badRequest(`Resource id "${resource.id}" does not match the resource found by the condition (${id})`, `${resource.resourceType}.id`);
      }
      return this.update({ ...resource, id }, { tx });
    });
  }

  /** JSON Patch (RFC 6902) on the current version; the result is validated like any update. */
  async patch(resourceType: string, id: string, ops: unknown, opts: { ifMatch?: string; tx?: Tx } = {}): Promise<WriteResult> {
    assertResourceType(resourceType);
    return this.inTx(opts.tx, async (tx) => {
      const current = await this.lockCurrent(tx, resourceType, id);
      if (!current) throw notFound(`${resourceType}/${id} is not known`);
      if (current.deleted) throw gone(`${resourceType}/${id} was deleted`);
      checkIfMatch(opts.ifMatch, current, `${resourceType}/${id}`);
      const patched = applyJsonPatch(JSON.parse(current.content as string), ops) as Resource;
      if (patched.resourceType !== resourceType || patched.id !== id) {
        throw badRequest('A patch may not change resourceType or id');
      }
      return this.write(tx, patched, current.version_id + 1, 'PATCH', current);
    });
  }

  async delete(resourceType: string, id: string, opts: { ifMatch?: string; tx?: Tx } = {}): Promise<DeleteResult> {
    assertResourceType(resourceType);
    return this.inTx(opts.tx, async (tx) => {
      const current = await this.lockCurrent(tx, resourceType, id);
      if (!current || current.deleted) return { deleted: false };
      checkIfMatch(opts.ifMatch, current, `${resourceType}/${id}`);
      const versionId = current.version_id + 1;
      const now = new Date();
      await tx.query(
        `WITH h AS (
           INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted, method, content)
           VALUES ($1, $2, $3, $4, true, 'DELETE', NULL) RETURNING seq)
         UPDATE resource SET version_id = $3, last_updated = $4, deleted = true, content = NULL,
                compartments = '{}', seq = (SELECT seq FROM h)
          WHERE resource_type = $1 AND id = $2`,
        [resourceType, id, versionId, now],
      );
      await removeResourceIndex(tx, resourceType, id);
      if (this.hooks.length) await this.emit(tx, { method: 'DELETE', resourceType, id, versionId, previous: JSON.parse(current.content as string) as Resource });
      return { deleted: true, versionId };
    });
  }

  /** DELETE Type?query: deletes every match when `multiple`, otherwise 0 or 1 match (more → 412). */
  async conditionalDelete(resourceType: string, query: string, opts: { multiple?: boolean; tx?: Tx } = {}): Promise<number> {
    assertResourceType(resourceType);
    return this.inTx(opts.tx, async (tx) => {
      const params = parseQuery(query);
      if (params.length === 0) throw badRequest('Conditional delete needs search criteria');
      const limit = opts.multiple ? 1000 : 2;
      const ids = await searchIds(tx, resourceType, params, limit + 1);
      if (ids.length > 1 && !opts.multiple) {
        throw preconditionFailed(`Conditional delete matched ${ids.length} ${resourceType} resources; criteria must select one`);
      }
      if (ids.length > limit) throw preconditionFailed(`Conditional delete matched more than ${limit} resources`);
      let n = 0;
      for (const id of ids) if ((await this.delete(resourceType, id, { tx })).deleted) n++;
      return n;
    });
  }

  /**
   * Resolves a conditional query to at most one id. An advisory lock on the condition serialises concurrent
   * writers with the same condition, so two identical conditional creates cannot both create.
   */
  async findConditional(tx: Tx, resourceType: string, query: string, what: string, opts: { locked?: boolean } = {}): Promise<string | undefined> {
    const params = parseQuery(query.replace(/^\?/, ''));
    if (params.length === 0) throw badRequest(`${what} needs search criteria`);
    if (!opts.locked) await this.lockConditions(tx, [[resourceType, query]]);
    const ids = await searchIds(tx, resourceType, params, 2);
    if (ids.length > 1) throw preconditionFailed(`${what} criteria "${query}" match more than one ${resourceType}`);
    return ids[0];
  }

  /**
   * Takes the advisory locks of several conditions in one round trip, in a fixed (sorted) order so that two
   * transactions locking overlapping sets cannot deadlock on each other.
   */
  async lockConditions(tx: Tx, conditions: Array<[resourceType: string, query: string]>): Promise<void> {
    if (conditions.length === 0) return;
    const keys = [...new Set(conditions.map(([type, query]) => `${type}?${query}`))].sort();
    await tx.query('SELECT pg_advisory_xact_lock(hashtext(k)) FROM (SELECT unnest($1::text[]) AS k ORDER BY 1) s', [keys]);
  }

  private async lockCurrent(tx: Tx, resourceType: string, id: string): Promise<ResourceRow | undefined> {
    const r = await tx.query<ResourceRow>(
      'SELECT version_id, deleted, content, last_updated FROM resource WHERE resource_type = $1 AND id = $2 FOR UPDATE',
      [resourceType, id],
    );
    return r.rows[0];
  }

  /** Validates, stamps meta, writes history + current row + search index in `tx`. */
  private async write<T extends Resource>(
    tx: Tx,
    input: T,
    versionId: number,
    method: ChangeEvent['method'],
    previous?: ResourceRow,
  ): Promise<WriteResult<T>> {
    const now = new Date();
    const resource = {
      ...input,
      meta: { ...input.meta, versionId: String(versionId), lastUpdated: now.toISOString() },
    } as T;
    assertValidResource(resource);
    const json = JSON.stringify(resource);
    const params: unknown[] = [resource.resourceType, resource.id, versionId, now, method, json, patientCompartmentsOf(resource)];
    // History, current row and search index in one statement: one round trip per write.
    const indexCtes = indexResourceCtes(resource, params);
    await tx.query(
      `WITH h AS (
         INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted, method, content)
         VALUES ($1, $2, $3, $4, false, $5, $6) RETURNING seq),
       r AS (
         INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content, compartments, seq)
         SELECT $1, $2, $3, $4, false, $6, $7, seq FROM h
         ON CONFLICT (resource_type, id) DO UPDATE SET
           version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated, deleted = false,
           content = EXCLUDED.content, compartments = EXCLUDED.compartments, seq = EXCLUDED.seq)
       ${indexCtes.map((c) => `, ${c}`).join('\n')}
       SELECT 1`,
      params,
    ).catch((err: { code?: string; message: string }) => {
      // Two writers creating the same client-assigned id at once: the loser retries as an update.
      if (err.code === '23505') throw conflict(`${resource.resourceType}/${resource.id} was written concurrently; retry`);
      throw err;
    });
    if (this.hooks.length) await this.emit(tx, {
      method,
      resourceType: resource.resourceType,
      id: resource.id as string,
      versionId,
      resource,
      previous: previous?.content ? (JSON.parse(previous.content) as Resource) : undefined,
    });
    return { resource, created: versionId === 1, json };
  }
}

/** Equal apart from the server-maintained meta.versionId / meta.lastUpdated, whatever the key order. */
function sameContent(a: Resource, b: Resource): boolean {
  return canonical(withoutVersionMeta(a)) === canonical(withoutVersionMeta(b));
}

function withoutVersionMeta(r: Resource): object {
  const { meta, ...rest } = r;
  const { versionId: _v, lastUpdated: _l, ...kept } = meta ?? {};
  return Object.keys(kept).length ? { ...rest, meta: kept } : rest;
}

function canonical(value: unknown): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : 1)).map(([k, x]) => [k, sort(x)]))
        : v;
  return JSON.stringify(sort(value));
}

function toVersion(resourceType: string, id: string, row: ResourceRow): StoredVersion {
  return {
    resourceType,
    id,
    versionId: row.version_id,
    lastUpdated: new Date(row.last_updated),
    deleted: row.deleted,
    content: row.content,
  };
}

export function versionHeaders(v: { versionId: number; lastUpdated: Date }): Record<string, string> {
  return { ETag: `W/"${v.versionId}"`, 'Last-Modified': v.lastUpdated.toUTCString() };
}

/** Accepts `W/"3"`, `"3"` or `3`. */
export function parseETag(etag: string): string {
  return etag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function checkIfMatch(ifMatch: string | undefined, current: ResourceRow | undefined, what: string): void {
  if (!ifMatch) return;
  const wanted = parseETag(ifMatch);
  if (!current || current.deleted || String(current.version_id) !== wanted) {
    const have = current && !current.deleted ? `version ${current.version_id}` : 'no current version';
    throw preconditionFailed(`If-Match ${ifMatch} does not match ${what}: the server has ${have}`);
  }
}
