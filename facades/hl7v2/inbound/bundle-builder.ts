/**
 * Builds the one FHIR transaction Bundle a message becomes: conditional creates (ifNoneExist) and
 * conditional updates (PUT Type?identifier=…) keyed by business identifiers, so that a resend lands
 * once, with `urn:uuid:` references between entries.
 */
import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, Identifier, Resource } from '@medplum/fhirtypes';

export function identifierQuery(id: Identifier): string {
  return `identifier=${encodeURIComponent(id.system ?? '')}|${encodeURIComponent(id.value ?? '')}`;
}

export class BundleBuilder {
  readonly entries: BundleEntry[] = [];
  private byKey = new Map<string, string>();

  /** Creates the resource unless one with this identifier exists; returns its urn:uuid reference. */
  createIfNone(resource: Resource, key: Identifier): string {
    return this.add(resource, 'POST', resource.resourceType, identifierQuery(key));
  }

  /** Creates or replaces the resource found by this identifier. */
  upsert(resource: Resource, key: Identifier): string {
    return this.add(resource, 'PUT', `${resource.resourceType}?${identifierQuery(key)}`);
  }

  private add(resource: Resource, method: 'POST' | 'PUT', url: string, ifNoneExist?: string): string {
    // The same business key twice in one message (two OBR for one order): one entry, the later wins.
    const k = `${resource.resourceType}?${ifNoneExist ?? url}`;
    const existing = this.byKey.get(k);
    if (existing) {
      const e = this.entries.find((x) => x.fullUrl === existing)!;
      e.resource = resource;
      return existing;
    }
    const fullUrl = `urn:uuid:${randomUUID()}`;
    this.entries.push({ fullUrl, resource, request: { method, url, ...(ifNoneExist ? { ifNoneExist } : {}) } });
    this.byKey.set(k, fullUrl);
    return fullUrl;
  }

  build(): Bundle {
    return { resourceType: 'Bundle', type: 'transaction', entry: this.entries };
  }
}
