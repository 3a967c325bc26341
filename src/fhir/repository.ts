import { randomUUID } from 'node:crypto';
import type { Resource } from '@medplum/fhirtypes';
import type { Database, Queryable, Tx } from '../db/database.js';
import { badRequest, FhirError, gone, notFound, outcome, preconditionFailed } from './outcome.js';
import { assertValidResource, assertResourceType, assertValidId } from './validation.js';
import { removeResourceIndex, searchIds, searchIdsMany } from './search/index.js';
import { applyJsonPatch } from './patch.js';
import { checkIfMatch, sameContent, versionHeaders } from './versions.js';
import { writeVersions, type VersionToWrite } from './write-statement.js';
import { readLatest, readMany } from './read-many.js';
import { type CurrentRow, ReadBatcher } from './read-batch.js';
import { CreateBatcher } from './create-batch.js';

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

export interface ChangeHookOptions {
  /**
   * Cheap and synchronous: may the hook act on a change of this resource type at all? When no hook may, a create
   * outside a transaction is one autocommitted statement (one round trip) instead of BEGIN, write, COMMIT:
   * in the profile of 16 clients creating Observations, the two extra round trips' socket writes cost more CPU
   * than validation. Without it the hook is asked about every change.
   */
  wants?: (resourceType: string) => boolean;
}

/** Conditional queries arrive as the raw query string (`identifier=a|b&active=true`). */
export type SearchParams = Array<[string, string]>;

export function parseQuery(query: string): SearchParams {
  return [...new URLSearchParams(query)];
}

/** A validated, stamped version waiting to be written (alone, or with the rest of a transaction's writes). */
interface PendingWrite extends VersionToWrite {
  previous?: ResourceRow;
}

const PENDING = Symbol('pending writes');

/**
 * A transaction whose resource writes are queued and written together, in one statement: when anything else is
 * queried through it (so every read sees every earlier write) and at `flush()`, which the owner calls before commit.
 */
export interface BatchingTx extends Tx {
  readonly [PENDING]: PendingWrite[];
  flush(): Promise<void>;
}

type ResourceRow = CurrentRow;

/**
 * The one place that writes resources. REST handlers, batch/transaction entries and facades all come
 * here, so versioning, validation, search indexing and compartments are applied once, in one transaction.
 * Every method takes an optional `tx`: inside a FHIR transaction the whole Bundle shares one.
 */
export class Repository {
  private readonly hooks: Array<{ hook: ChangeHook; wants?: ChangeHookOptions['wants'] }> = [];

  /** Outside a transaction, reads asked for together share one query (src/fhir/read-batch.ts). */
  private readonly reads: ReadBatcher;
  /** Lone creates of one moment share one statement and one commit (src/fhir/create-batch.ts). */
  private readonly creates: CreateBatcher;

  constructor(readonly db: Database) {
    this.reads = new ReadBatcher(db);
    this.creates = new CreateBatcher(db);
  }

  /** Registers a hook run inside every write's transaction (e.g. the HL7 v2 outbound outbox). */
  onChange(hook: ChangeHook, opts: ChangeHookOptions = {}): void {
    this.hooks.push({ hook, wants: opts.wants });
  }

  private hooked(resourceType: string): boolean {
    return this.hooks.some(({ wants }) => !wants || wants(resourceType));
  }

  private async emit(tx: Tx, change: ChangeEvent): Promise<void> {
    for (const { hook, wants } of this.hooks) if (!wants || wants(change.resourceType)) await hook(tx, change);
  }

  /** Runs `fn` in `tx` when given, otherwise in a new transaction. */
  private inTx<T>(tx: Tx | undefined, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return tx ? fn(tx) : this.db.transaction(fn);
  }

  /**
   * Wraps `tx` so that the writes made through it go to the database together (a FHIR transaction of 12 entries
   * is one INSERT statement, not 12 round trips). Change hooks run after that statement, in write order.
   */
  batchWrites(tx: Tx): BatchingTx {
    const pending: PendingWrite[] = [];
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const items = pending.splice(0);
      await writeVersions(tx, items).catch((err: unknown) => {
        // A failure of the joint statement belongs to the transaction, not to the entry that happened to trigger it.
        throw Object.assign(err instanceof FhirError ? err : new FhirError(500, outcome('error', 'exception', `writing ${items.length} resources failed: ${(err as Error).message}`)), { wholeTransaction: true });
      });
      for (const item of items) await this.emitWrite(tx, item);
    };
    return {
      [PENDING]: pending,
      flush,
      query: async (sql, params) => {
        await flush();
        return tx.query(sql, params);
      },
      exec: async (sql) => {
        await flush();
        return tx.exec(sql);
      },
    };
  }

  async read(resourceType: string, id: string, q: Queryable = this.db): Promise<StoredVersion> {
    assertResourceType(resourceType);
    const row =
      q === this.db
        ? await this.reads.read(resourceType, id)
        : (await q.query<ResourceRow>('SELECT version_id, deleted, content, last_updated FROM resource WHERE resource_type = $1 AND id = $2', [resourceType, id])).rows[0];
    if (!row) throw notFound(`${resourceType}/${id} is not known`);
    const v = toVersion(resourceType, id, row);
    if (v.deleted) throw new FhirError(410, gone(`${resourceType}/${id} was deleted`).outcome, versionHeaders(v));
    return v;
  }

  async readResource<T extends Resource = Resource>(resourceType: string, id: string, q: Queryable = this.db): Promise<T> {
    return JSON.parse((await this.read(resourceType, id, q)).content as string) as T;
  }

  /** The current resources among `ids` in their order, in one round trip; unknown and deleted ones left out. */
  readMany<T extends Resource = Resource>(resourceType: string, ids: string[], q: Queryable = this.db): Promise<T[]> {
    return readMany<T>(q, resourceType, ids);
  }

  /** Current versions, or for deleted resources their last version before the deletion, by id. */
  readLatest<T extends Resource = Resource>(resourceType: string, ids: string[], q: Queryable = this.db): Promise<Map<string, { resource: T; deleted: boolean }>> {
    return readLatest<T>(q, resourceType, ids);
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
    if (!opts.tx && !opts.ifNoneExist && !this.hooked(resource.resourceType)) {
      // One statement writes history, current row and index rows: atomic without an explicit transaction, and
      // shared with the other lone creates of this moment (src/fhir/create-batch.ts).
      const item = this.stamp({ ...resource, id: opts.assignedId ?? randomUUID() }, 1, 'POST');
      await this.creates.write(item);
      return { resource: item.resource, created: true, json: item.json };
    }
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
  async findConditional(tx: Tx, resourceType: string, query: string, what: string): Promise<string | undefined> {
    await this.lockConditions(tx, [[resourceType, query]]);
    return (await this.findConditionals(tx, [{ resourceType, query, what }]))[0];
  }

  /**
   * Resolves several conditional queries, each to at most one id, in one round trip. The caller holds their
   * locks (`lockConditions`). A failure carries `searchIndex`: which condition it was.
   */
  async findConditionals(tx: Tx, conditions: Array<{ resourceType: string; query: string; what: string }>): Promise<Array<string | undefined>> {
    const searches = conditions.map(({ resourceType, query, what }) => {
      const params = parseQuery(query.replace(/^\?/, ''));
      if (params.length === 0) throw badRequest(`${what} needs search criteria`);
      return { resourceType, params };
    });
    const found = await searchIdsMany(tx, searches, 2);
    return found.map((ids, i) => {
      const { resourceType, query, what } = conditions[i];
      if (ids.length > 1) throw Object.assign(preconditionFailed(`${what} criteria "${query}" match more than one ${resourceType}`), { searchIndex: i });
      return ids[0];
    });
  }

  /**
   * Takes the advisory locks of several conditions in one round trip, in a fixed (sorted) order so that two
   * transactions locking overlapping sets cannot deadlock on each other.
   */
  async lockConditions(tx: Tx, conditions: Array<[resourceType: string, query: string]>): Promise<void> {
    await lockConditions(tx, conditions);
  }

  private async lockCurrent(tx: Tx, resourceType: string, id: string): Promise<ResourceRow | undefined> {
    const r = await tx.query<ResourceRow>(
      'SELECT version_id, deleted, content, last_updated FROM resource WHERE resource_type = $1 AND id = $2 FOR UPDATE',
      [resourceType, id],
    );
    return r.rows[0];
  }

  /** Validates and stamps meta, then writes history + current row + search index in `tx` (or queues it there). */
  private async write<T extends Resource>(
    tx: Tx,
    input: T,
    versionId: number,
    method: ChangeEvent['method'],
    previous?: ResourceRow,
  ): Promise<WriteResult<T>> {
    const item = this.stamp(input, versionId, method, previous);
    const { resource } = item;
    const pending = (tx as Partial<BatchingTx>)[PENDING];
    if (pending) pending.push(item);
    else {
      await writeVersions(tx, [item]);
      await this.emitWrite(tx, item);
    }
    return { resource, created: versionId === 1, json: item.json };
  }

  /** The version to write: meta stamped, validated, serialised once. */
  private stamp<T extends Resource>(input: T, versionId: number, method: ChangeEvent['method'], previous?: ResourceRow): PendingWrite & { resource: T } {
    const resource = {
      ...input,
      meta: { ...input.meta, versionId: String(versionId), lastUpdated: new Date().toISOString() },
    } as T;
    assertValidResource(resource);
    return { resource, versionId, method, json: JSON.stringify(resource), previous };
  }

  private async emitWrite(tx: Tx, item: PendingWrite): Promise<void> {
    if (this.hooks.length === 0) return;
    await this.emit(tx, {
      method: item.method,
      resourceType: item.resource.resourceType,
      id: item.resource.id as string,
      versionId: item.versionId,
      resource: item.resource,
      previous: item.previous?.content ? (JSON.parse(item.previous.content) as Resource) : undefined,
    });
  }
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

/** See `Repository.lockConditions`; also taken by the identity guard before a facade's transaction. */
export async function lockConditions(tx: Tx, conditions: Array<[resourceType: string, query: string]>): Promise<void> {
  if (conditions.length === 0) return;
  const keys = [...new Set(conditions.map(([type, query]) => `${type}?${query}`))].sort();
  await tx.query('SELECT pg_advisory_xact_lock(hashtext(k)) FROM (SELECT unnest($1::text[]) AS k ORDER BY 1) s', [keys]);
}
