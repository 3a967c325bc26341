import type { Resource } from '@medplum/fhirtypes';

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };
/** Kept whatever `_elements` says: a resource without them is not a resource. */
const MANDATORY = new Set(['resourceType', 'id', 'meta']);

/** The top-level elements `_elements` keeps for `type`, or undefined when it does not restrict that type. */
export function elementsFor(elements: { all: string[]; byType: Record<string, string[]> } | undefined, type: string): Set<string> | undefined {
  if (!elements) return undefined;
  const names = [...elements.all, ...(elements.byType[type] ?? [])];
  // "Patient.name" restricts Patients only; a type no entry names is exported whole unless bare names exist.
  if (names.length === 0) return undefined;
  return new Set(names);
}

/** Keeps the listed top-level elements (and the mandatory ones) and marks the copy SUBSETTED, as search does. */
export function subsetJson(json: string, keep: Set<string>): string {
  const r = JSON.parse(json) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) if (MANDATORY.has(k) || keep.has(k)) out[k] = v;
  const meta = { ...((out.meta as Resource['meta']) ?? {}) };
  meta.tag = [...(meta.tag ?? []).filter((t) => t.code !== SUBSETTED.code), SUBSETTED];
  out.meta = meta;
  return JSON.stringify(out);
}
