import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Database, Queryable, Tx } from '../db/database.js';
import { systemAccess } from '../fhir/access.js';
import type { Repository } from '../fhir/repository.js';
import type { FhirRouter } from '../fhir/router.js';

/**
 * The writes this module makes, all through the repository (one write path). Every method takes the
 * caller's transaction so an association row, its DeviceUseStatement and its AuditEvent commit together.
 */
export interface DeviceStore {
  db: Database;
  create<T extends Resource>(resource: T, tx?: Tx): Promise<T>;
  read<T extends Resource>(resourceType: T['resourceType'], id: string, q?: Queryable): Promise<T>;
  update<T extends Resource>(resource: T, tx?: Tx): Promise<T>;
  /** Executes a FHIR transaction Bundle (conditional creates, urn:uuid references); returns the response Bundle. */
  transaction(bundle: Bundle, tx?: Tx): Promise<Bundle>;
}

/** Who did it, for AuditEvent.agent and the held_reading / device_association rows. */
export interface Actor {
  /** 'Practitioner/<id>', a user name, a client id, or 'cli'. */
  who: string;
}

/**
 * Builds the store from the lead's Repository and the FHIR router (whose bundle processor runs
 * transaction Bundles exactly as POST /fhir does).
 */
export function deviceStore(opts: { db: Database; repo: Repository; router: FhirRouter; actor?: string }): DeviceStore {
  const access = systemAccess(opts.actor ?? 'facade:devices');
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
    async transaction(bundle, tx) {
      const res = await opts.router.handle({ method: 'POST', path: '', query: [], headers: {}, body: bundle, access, tx });
      return (res.resource ?? JSON.parse(res.json as string)) as Bundle;
    },
  };
}
