/**
 * Builds the one FHIR transaction Bundle a message becomes: conditional creates (ifNoneExist) and
 * conditional updates (PUT Type?identifier=…) keyed by business identifiers, so that a resend lands
 * once, with `urn:uuid:` references between entries.
 */
import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, Identifier, Resource } from '@medplum/fhirtypes';
import type { Segment } from '../message.js';

/** Where an entry's business key came from (OBR-3, ORC-2, …): what an ERR names when the key is refused. */
export interface KeyOrigin {
  segment: Segment;
  field: number;
  /** 'filler order number', 'placer order number', … */
  what: string;
}

export function identifierQuery(id: Identifier): string {
  return `identifier=${encodeURIComponent(id.system ?? '')}|${encodeURIComponent(id.value ?? '')}`;
}

/**
 * OBR-2/3 (or ORC-2/3 when the OBR leaves it empty): where an order's key was read. `field` 2 is the placer
 * order number, 3 the filler's.
 */
export function orderKeyOrigin(obr: Segment, orc: Segment | undefined, field: 2 | 3): KeyOrigin {
  const what = field === 3 ? 'filler order number' : 'placer order number';
  const segment = obr.name === 'OBR' && obr.reps(field)[0]?.c(1) ? obr : (orc ?? obr);
  return { segment, field, what };
}

export class BundleBuilder {
  readonly entries: BundleEntry[] = [];
  private byKey = new Map<string, string>();
  private origins = new Map<string, KeyOrigin>();

  /** Creates the resource unless one with this identifier exists; returns its urn:uuid reference. */
  createIfNone(resource: Resource, key: Identifier, origin?: KeyOrigin): string {
    return this.add(resource, 'POST', resource.resourceType, identifierQuery(key), origin);
  }

  /** Creates or replaces the resource found by this identifier. */
  upsert(resource: Resource, key: Identifier, origin?: KeyOrigin): string {
    return this.add(resource, 'PUT', `${resource.resourceType}?${identifierQuery(key)}`, undefined, origin);
  }

  /** The key origin of each entry, in entry order. */
  keyOrigins(): Array<KeyOrigin | undefined> {
    return this.entries.map((e) => this.origins.get(e.fullUrl!));
  }

  private add(resource: Resource, method: 'POST' | 'PUT', url: string, ifNoneExist?: string, origin?: KeyOrigin): string {
    // The same business key twice in one message (two OBR for one order): one entry, the later wins.
    const k = `${resource.resourceType}?${ifNoneExist ?? url}`;
    const existing = this.byKey.get(k);
    if (existing) {
      const e = this.entries.find((x) => x.fullUrl === existing)!;
      e.resource = resource;
      return existing;
    }
    const fullUrl = `urn:uuid:${randomUUID()}`;
    if (origin) this.origins.set(fullUrl, origin);
    this.entries.push({ fullUrl, resource, request: { method, url, ...(ifNoneExist ? { ifNoneExist } : {}) } });
    this.byKey.set(k, fullUrl);
    return fullUrl;
  }

  build(): Bundle {
    return { resourceType: 'Bundle', type: 'transaction', entry: this.entries };
  }
}
