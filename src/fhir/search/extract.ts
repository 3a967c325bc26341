/**
 * Extraction of index values from a resource: every indexed search parameter's FHIRPath is evaluated and its
 * values turned into rows for the index tables. Pure (no database), so it is unit-tested on its own.
 */
import { evalFhirPathTyped, toTypedValue } from '@medplum/core';
import type { FhirPathAtom, TypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { indexedParamsOf } from './definitions.js';
import { compileSimplePath, type PathEvaluator } from './simple-paths.js';
import { datesOf, identifierTypes, quantitiesOf, referenceIdentifiers, referencesOf, STRING_TYPES, stringsOf, tokensOf, urisOf } from './typed-values.js';
import type { ParamDef, ParamType } from './definitions.js';
import { normalizeString, sortableDate, sortableNumber } from './values.js';
import { timelineRows } from './timeline-rows.js';
import type { TimelineRow } from './timeline-rows.js';

export interface IndexRows {
  /** [code, system, value] */
  token: Array<[string, string | null, string | null]>;
  /** [code, normalized, raw] */
  string: Array<[string, string, string]>;
  /** [code, low, high] */
  date: Array<[string, Date, Date]>;
  /** [code, low, high, system, unit] */
  quantity: Array<[string, number | null, number | null, string | null, string | null]>;
  /** [code, targetType, targetId] */
  reference: Array<[string, string | null, string]>;
  /** [code, value] */
  uri: Array<[string, string]>;
  composite: CompositeRow[];
  /** [code, lo, hi] */
  sort: Array<[string, string, string]>;
  /** rows of search_timeline (timeline-rows.ts) */
  timeline: TimelineRow[];
}

export interface CompositeRow {
  code: string;
  c1System: string | null;
  c1Value: string | null;
  t2System: string | null;
  t2Value: string | null;
  n2Low: number | null;
  n2High: number | null;
  n2System: string | null;
  n2Unit: string | null;
  d2Low: Date | null;
  d2High: Date | null;
  n3Low: number | null;
  n3High: number | null;
}


/** Per expression and resource type: a plain-path evaluator, or null when the FHIRPath engine is needed. */
const simplePaths = new WeakMap<object, Map<string, PathEvaluator | null>>();

/** `expression` on `input`: a resource of `resourceType`, or (null) the element of a composite parameter's part. */
function evaluate(expression: FhirPathAtom, input: TypedValue[], resourceType: string | null, resource: TypedValue): TypedValue[] {
  const key = resourceType ?? '';
  let byType = simplePaths.get(expression);
  if (!byType) simplePaths.set(expression, (byType = new Map()));
  let fast = byType.get(key);
  if (fast === undefined) byType.set(key, (fast = compileSimplePath(expression, resourceType) ?? null));
  try {
    return fast ? fast(input) : evalFhirPathTyped(expression, input, { '%resource': resource });
  } catch {
    return []; // a FHIRPath that fails on odd content must not make the write fail
  }
}

export function emptyRows(): IndexRows {
  return { token: [], string: [], date: [], quantity: [], reference: [], uri: [], composite: [], sort: [], timeline: [] };
}

/** Top-level element names of a resource; a choice element `valueQuantity` also counts as `value`. */
function presentElements(resource: Resource): Set<string> {
  const out = new Set<string>();
  for (const [k, v] of Object.entries(resource)) {
    if (v === undefined || v === null) continue;
    out.add(k);
    const m = /^([a-z][a-zA-Z]*?)[A-Z]/.exec(k);
    if (m) {
      // every camel-case prefix, so `valueCodeableConcept` counts as `value` and `valueCodeable`
      for (let i = 1; i < k.length; i++) if (k[i] >= 'A' && k[i] <= 'Z') out.add(k.slice(0, i));
    }
  }
  return out;
}

/** All index rows for a resource (deduplicated). */
export function extractIndexRows(resource: Resource): IndexRows {
  const rows = emptyRows();
  const input = [toTypedValue(resource)];
  const present = presentElements(resource);
  for (const def of indexedParamsOf(resource.resourceType)) {
    // Most parameters of a type read elements this resource does not have: skip the FHIRPath evaluation.
    if (def.roots && !def.roots.some((r) => present.has(r))) continue;
    const values = evaluate(def.expression!, input, resource.resourceType, input[0]!);
    if (values.length === 0) continue;
    addParam(rows, def, values, input[0]);
  }
  const out = dedupe(rows);
  out.timeline = timelineRows(resource.resourceType, out);
  return out;
}

function minMax(keys: string[]): [string, string] | undefined {
  if (keys.length === 0) return undefined;
  let lo = keys[0];
  let hi = keys[0];
  for (const k of keys) {
    if (k < lo) lo = k;
    if (k > hi) hi = k;
  }
  return [lo, hi];
}

/** Parameter types that get a row in search_sort. */
export const SORT_ROW_TYPES = new Set<ParamType>(['date', 'number', 'quantity']);

function addParam(rows: IndexRows, def: ParamDef, values: TypedValue[], root: TypedValue): void {
  const code = def.code;
  let sortKeys: Array<[string, string]> = [];
  switch (def.type) {
    case 'token': {
      const { tokens, texts } = tokensOf(values);
      for (const [s, v] of tokens) rows.token.push([code, s, v]);
      for (const t of texts) rows.string.push([`${code}:text`, normalizeString(t), t]);
      for (const [typeKey, v] of identifierTypes(values)) rows.token.push([`${code}:of-type`, typeKey, v]);
      sortKeys = tokens.filter((t) => t[1] !== null).map((t) => [t[1]!, t[1]!]);
      break;
    }
    case 'string': {
      const strings = stringsOf(values);
      for (const s of strings) rows.string.push([code, normalizeString(s), s]);
      sortKeys = strings.map((s) => [normalizeString(s), normalizeString(s)]);
      break;
    }
    case 'date': {
      const dates = datesOf(values);
      for (const d of dates) rows.date.push([code, d.low, d.high]);
      sortKeys = dates.map((d) => [sortableDate(d.low), sortableDate(d.high)]);
      break;
    }
    case 'number':
    case 'quantity': {
      const qs = quantitiesOf(values);
      for (const q of qs) rows.quantity.push([code, q.low, q.high, q.system, q.unit]);
      sortKeys = qs
        .filter((q) => q.low !== null || q.high !== null)
        .map((q) => [sortableNumber(q.low ?? q.high!), sortableNumber(q.high ?? q.low!)]);
      break;
    }
    case 'reference': {
      const refs = referencesOf(values);
      for (const [t, id] of refs) rows.reference.push([code, t, id]);
      for (const [s, v] of referenceIdentifiers(values)) rows.token.push([`${code}:identifier`, s, v]);
      sortKeys = refs.map(([t, id]) => (t ? `${t}/${id}` : id)).map((k) => [k, k]);
      break;
    }
    case 'uri': {
      const uris = urisOf(values);
      for (const u of uris) rows.uri.push([code, u]);
      sortKeys = uris.map((u) => [u, u]);
      break;
    }
    case 'composite':
      addComposite(rows, def, values, root);
      return;
  }
  // Sort rows only where a top-N over millions of rows needs an ordered index (dates, numbers); the other types
  // sort through their own index table (see query ORDER BY), which keeps the write cost per resource down.
  if (!SORT_ROW_TYPES.has(def.type)) return;
  const lo = minMax(sortKeys.map((k) => k[0]));
  const hi = minMax(sortKeys.map((k) => k[1]));
  if (lo && hi) rows.sort.push([code, lo[0], hi[1]]);
}

interface PartValue {
  system?: string | null;
  value?: string | null;
  nLow?: number | null;
  nHigh?: number | null;
  nSystem?: string | null;
  nUnit?: string | null;
  dLow?: Date;
  dHigh?: Date;
}

/** The values of one composite part, in the shape of the composite table's columns. */
function partValues(type: ParamType, values: TypedValue[]): PartValue[] {
  switch (type) {
    case 'token':
      return tokensOf(values).tokens.map(([system, value]) => ({ system, value }));
    case 'string':
      return stringsOf(values.filter((v) => STRING_TYPES.has(v.type))).map((s) => ({ system: null, value: normalizeString(s) }));
    case 'reference':
      return referencesOf(values).map(([t, id]) => ({ system: null, value: t ? `${t}/${id}` : id }));
    case 'uri':
      return urisOf(values).map((u) => ({ system: null, value: u }));
    case 'date':
      return datesOf(values).map((d) => ({ dLow: d.low, dHigh: d.high }));
    case 'number':
    case 'quantity':
      return quantitiesOf(values).map((q) => ({ nLow: q.low, nHigh: q.high, nSystem: q.system, nUnit: q.unit }));
    default:
      return [];
  }
}

/** One row per combination of part values found on the same element (e.g. one Observation.component). */
function addComposite(rows: IndexRows, def: ParamDef, elements: TypedValue[], root: TypedValue): void {
  const parts = def.parts!;
  for (const el of elements) {
    const perPart = parts.map((p) => {
      return partValues(p.type, evaluate(p.expression, [el], null, root));
    });
    if (perPart.some((v) => v.length === 0)) continue;
    const [p1, p2, p3] = perPart;
    for (const a of p1) {
      for (const b of p2) {
        for (const c of p3 ?? [{}]) {
          rows.composite.push({
            code: def.code,
            c1System: a.system ?? null,
            c1Value: a.value ?? null,
            t2System: b.system ?? null,
            t2Value: b.value ?? null,
            n2Low: b.nLow ?? null,
            n2High: b.nHigh ?? null,
            n2System: b.nSystem ?? null,
            n2Unit: b.nUnit ?? null,
            d2Low: b.dLow ?? null,
            d2High: b.dHigh ?? null,
            n3Low: c.nLow ?? null,
            n3High: c.nHigh ?? null,
          });
        }
      }
    }
  }
}

function uniq<T>(arr: T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return arr.filter((t) => {
    const k = key(t);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function dedupe(rows: IndexRows): IndexRows {
  const j = (t: unknown): string => JSON.stringify(t);
  return {
    token: uniq(rows.token, j),
    string: uniq(rows.string, (r) => `${r[0]}\u0000${r[2]}`),
    date: uniq(rows.date, (r) => `${r[0]}|${r[1].getTime()}|${r[2].getTime()}`),
    quantity: uniq(rows.quantity, j),
    reference: uniq(rows.reference, j),
    uri: uniq(rows.uri, j),
    composite: uniq(rows.composite, j),
    sort: rows.sort,
    timeline: [],
  };
}
