/**
 * The Synthea bundles of the shared corpus as plain resources (urn:uuid references rewritten to Type/id, as the
 * repository's transaction does): what the search tests and the search benchmark load. Shared support code, in
 * neither test/ nor bench/, so that neither tree imports the other.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { fixturePath } from './shared-data.js';

const cache = new Map<string, Resource[]>();

/** Every resource of the bundles in `dir` (the fixtures' unless said), with references rewritten and a fixed meta.lastUpdated. */
export function syntheaResources(dir = fixturePath('fhir/synthea')): Resource[] {
  const cached = cache.get(dir);
  if (cached) return cached;
  const out: Resource[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const bundle = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Bundle;
    const map = new Map<string, string>();
    for (const e of bundle.entry ?? []) {
      if (e.fullUrl && e.resource?.id) map.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
    }
    for (const e of bundle.entry ?? []) {
      const text = JSON.stringify(e.resource).replace(/"reference":"(urn:uuid:[^"]+)"/g, (m, u: string) =>
        map.has(u) ? `"reference":"${map.get(u)}"` : m,
      );
      out.push(JSON.parse(text) as Resource);
    }
  }
  // Practitioners and Organizations recur across bundles (conditional creates): keep one of each id.
  const byKey = new Map<string, Resource>();
  for (const r of out) byKey.set(`${r.resourceType}/${r.id}`, r);
  const all = [...byKey.values()];
  cache.set(dir, all);
  return all;
}

