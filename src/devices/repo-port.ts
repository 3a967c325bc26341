import type { BundleEntry, Resource } from '@medplum/fhirtypes';
import type { Database, Queryable, Tx } from '../db/database.js';
import type { Repository } from '../fhir/repository.js';
import type { SystemWriter, WrittenEntry } from '../fhir/write.js';

/**
 * The writes this module makes, all through the repository (one write path). Every method takes the
 * caller's transaction so an association row, its DeviceUseStatement and its AuditEvent commit together.
 */
export interface DeviceStore {
  db: Database;
  create<T extends Resource>(resource: T, tx?: Tx): Promise<T>;
  read<T extends Resource>(resourceType: T['resourceType'], id: string, q?: Queryable): Promise<T>;
  update<T extends Resource>(resource: T, tx?: Tx): Promise<T>;
  /** Writes transaction entries (conditional creates, urn:uuid references) through the system write port, all or none. */
  transaction(entries: BundleEntry[], tx?: Tx): Promise<WrittenEntry[]>;
}

/** Who did it, for AuditEvent.agent and the held_reading / device_association rows. */
export interface Actor {
  /** 'Practitioner/<id>', a user name, a client id, or 'cli'. */
  who: string;
}

/** Builds the store from the Repository and the core's system write port (which runs entries exactly as POST /fhir does). */
export function deviceStore(opts: { db: Database; repo: Repository; write: SystemWriter; actor?: string }): DeviceStore {
  const actor = opts.actor ?? 'facade:devices';
  return {
    db: opts.db,
    async create(resource, tx) {
      return (await opts.repo.create(resource, { tx })).resource;
    },
    async read<T extends Resource>(resourceType: T['resourceType'], id: string, q?: Queryable) {
      return opts.repo.readResource<T>(resourceType, id, q);
    },
    async update(resource, tx) {
      return (await opts.repo.update(resource, { tx })).resource;
    },
    transaction(entries, tx) {
      return opts.write.transaction({ actor, entries, tx });
    },
  };
}
