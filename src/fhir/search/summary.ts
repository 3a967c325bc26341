/**
 * `_summary` and `_elements`: trims a resource to the requested elements and tags it SUBSETTED, as the
 * R4 search page requires for any resource that is not returned whole.
 */
import { getDataType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** Element name in the resource JSON → its base name in the type schema ("valueQuantity" → "value"). */
function baseName(key: string, schemaKeys: Set<string>): string {
  if (schemaKeys.has(key)) return key;
  const m = /^([a-z][A-Za-z]*?)[A-Z][A-Za-z]*$/.exec(key);
  if (m) {
    for (let i = key.length - 1; i > 0; i--) {
      if (/[A-Z]/.test(key[i]) && schemaKeys.has(key.slice(0, i))) return key.slice(0, i);
    }
  }
  return key;
}

function tag(resource: Resource): Resource {
  const meta = { ...(resource.meta ?? {}) };
  meta.tag = [...(meta.tag ?? []).filter((t) => t.code !== SUBSETTED.code), SUBSETTED];
  return { ...resource, meta } as Resource;
}

function keep(resource: Resource, wanted: (base: string) => boolean): Resource {
  const schema = getDataType(resource.resourceType);
  const keys = new Set(Object.keys(schema.elements));
  const out: Record<string, unknown> = { resourceType: resource.resourceType };
  for (const [k, v] of Object.entries(resource)) {
    if (k === 'resourceType') continue;
    if (k === 'id' || k === 'meta' || wanted(baseName(k.replace(/^_/, ''), keys))) out[k] = v;
  }
  return tag(out as unknown as Resource);
}

export function applySummary(resource: Resource, summary?: string, elements?: string[]): Resource {
  if (summary === 'true' || summary === 'text' || summary === 'data') {
    const schema = getDataType(resource.resourceType);
    const summaryProps = (schema as unknown as { summaryProperties?: Set<string> }).summaryProperties ?? new Set<string>();
    const mandatory = (schema as unknown as { mandatoryProperties?: Set<string> }).mandatoryProperties ?? new Set<string>();
    if (summary === 'true') return keep(resource, (k) => summaryProps.has(k));
    if (summary === 'text') return keep(resource, (k) => k === 'text' || mandatory.has(k));
    const { text: _text, ...rest } = resource as Resource & { text?: unknown };
    return tag(rest as Resource);
  }
  if (elements?.length) {
    const set = new Set(elements.map((e) => e.replace(/^[A-Z][A-Za-z]+\./, '')));
    const schema = getDataType(resource.resourceType);
    const mandatory = (schema as unknown as { mandatoryProperties?: Set<string> }).mandatoryProperties ?? new Set<string>();
    return keep(resource, (k) => set.has(k) || mandatory.has(k));
  }
  return resource;
}
