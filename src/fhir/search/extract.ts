/**
 * Extraction of index values from a resource: every indexed search parameter's FHIRPath is evaluated and its
 * values turned into rows for the index tables. Pure (no database), so it is unit-tested on its own.
 */
import {
  convertToSearchableReferences,
  convertToSearchableTokens,
  convertToSearchableUris,
  evalFhirPathTyped,
  toTypedValue,
} from '@medplum/core';
import type { FhirPathAtom, TypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { indexedParamsOf } from './definitions.js';
import { compileSimplePath, type PathEvaluator } from './simple-paths.js';
import type { ParamDef, ParamType } from './definitions.js';
import {
  MAX_DATE,
  MAX_INDEXED_TEXT,
  MIN_DATE,
  dateRange,
  normalizeString,
  sortableDate,
  sortableNumber,
} from './values.js';
import type { DateRange } from './values.js';
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

/** System used to route token display texts (for :text) out of convertToSearchableTokens. */
const TEXT_SYSTEM = '\u0000text';

const LOCAL_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]+)?$/;

/** 'Patient/1' → ['Patient', '1']; anything else (absolute, canonical, urn) → [null, whole string]. */
export function splitReference(ref: string): [string | null, string] {
  const m = LOCAL_REF.exec(ref);
  return m ? [m[1], m[2]] : [null, ref];
}

function clip(s: string): string {
  return s.length > MAX_INDEXED_TEXT ? s.slice(0, MAX_INDEXED_TEXT) : s;
}

// ---- per-type value conversion (the same functions serve top-level params and composite parts) ----

/** Types a token can be read from; anything else (a Quantity reached through `value.as(...)`) is skipped. */
const TOKEN_TYPES = new Set([
  'CodeableConcept', 'Coding', 'Identifier', 'ContactPoint', 'code', 'string', 'boolean', 'uri', 'url', 'canonical',
  'id', 'oid', 'uuid', 'integer', 'positiveInt', 'unsignedInt', 'markdown',
]);
const STRING_TYPES = new Set(['string', 'markdown', 'code', 'id', 'uri', 'url', 'HumanName', 'Address', 'CodeableConcept', 'Coding']);

export function tokensOf(values: TypedValue[]): { tokens: Array<[string | null, string | null]>; texts: string[] } {
  const tokens: Array<[string | null, string | null]> = [];
  const texts: string[] = [];
  const usable = values.filter((v) => TOKEN_TYPES.has(v.type));
  for (const t of convertToSearchableTokens(usable, { textSearchSystem: TEXT_SYSTEM })) {
    if (t.system === TEXT_SYSTEM) {
      if (t.value) texts.push(t.value);
    } else if (t.value !== undefined || t.system !== undefined) {
      tokens.push([t.system ? clip(t.system) : null, t.value !== undefined ? clip(String(t.value)) : null]);
    }
  }
  return { tokens, texts };
}

/** Identifier.type codings, for `identifier:of-type=typeSystem|typeCode|value`. */
function identifierTypes(values: TypedValue[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const v of values) {
    if (v.type !== 'Identifier' || !v.value?.value) continue;
    for (const c of v.value.type?.coding ?? []) {
      if (c.code) out.push([`${c.system ?? ''}|${c.code}`, clip(String(v.value.value))]);
    }
  }
  return out;
}

/** String values; HumanName and Address are indexed part by part so a prefix matches any part. */
export function stringsOf(values: TypedValue[]): string[] {
  const out: string[] = [];
  const add = (s: unknown): void => {
    if (typeof s === 'string' && s.trim()) out.push(s);
  };
  for (const v of values) {
    const x = v.value;
    if (x === undefined || x === null) continue;
    if (v.type === 'HumanName') {
      add(x.text);
      add(x.family);
      for (const s of [...(x.given ?? []), ...(x.prefix ?? []), ...(x.suffix ?? [])]) add(s);
      const full = [...(x.prefix ?? []), ...(x.given ?? []), x.family, ...(x.suffix ?? [])].filter(Boolean).join(' ');
      if (full && full !== x.text) add(full);
    } else if (v.type === 'Address') {
      add(x.text);
      for (const s of x.line ?? []) add(s);
      for (const s of [x.city, x.district, x.state, x.postalCode, x.country]) add(s);
    } else if (typeof x === 'string') add(x);
    else if (typeof x === 'number' || typeof x === 'boolean') add(String(x));
    else if (typeof x === 'object') {
      // e.g. a CodeableConcept or Coding reached by a string parameter: search its human text
      add(x.text);
      add(x.display);
      add(x.value);
    }
  }
  return out;
}

/** Closed instant ranges of date, dateTime, instant, Period and Timing values (Timing: its outer limits). */
export function datesOf(values: TypedValue[]): DateRange[] {
  const out: DateRange[] = [];
  for (const v of values) {
    const x = v.value;
    if (x === undefined || x === null) continue;
    if (typeof x === 'string') {
      const r = dateRange(x);
      if (r) out.push(r);
    } else if (v.type === 'Period') {
      const s = typeof x.start === 'string' ? dateRange(x.start) : undefined;
      const e = typeof x.end === 'string' ? dateRange(x.end) : undefined;
      if (s || e) out.push({ low: s?.low ?? MIN_DATE, high: e?.high ?? MAX_DATE });
    } else if (v.type === 'Timing') {
      const ranges: DateRange[] = [];
      for (const ev of x.event ?? []) {
        const r = typeof ev === 'string' ? dateRange(ev) : undefined;
        if (r) ranges.push(r);
      }
      const b = x.repeat?.boundsPeriod;
      if (b) {
        const s = typeof b.start === 'string' ? dateRange(b.start) : undefined;
        const e = typeof b.end === 'string' ? dateRange(b.end) : undefined;
        if (s || e) ranges.push({ low: s?.low ?? MIN_DATE, high: e?.high ?? MAX_DATE });
      }
      if (ranges.length) {
        out.push({
          low: new Date(Math.min(...ranges.map((r) => r.low.getTime()))),
          high: new Date(Math.max(...ranges.map((r) => r.high.getTime()))),
        });
      }
    }
  }
  return out;
}

export interface QuantityValue {
  low: number | null;
  high: number | null;
  system: string | null;
  unit: string | null;
}

/** Quantities (with their unit), Ranges (low..high), SampledData (origin), and plain numbers. */
export function quantitiesOf(values: TypedValue[]): QuantityValue[] {
  const out: QuantityValue[] = [];
  const num = (n: unknown): number | null => (typeof n === 'number' && Number.isFinite(n) ? n : null);
  for (const v of values) {
    const x = v.value;
    if (x === undefined || x === null) continue;
    if (typeof x === 'number') {
      out.push({ low: x, high: x, system: null, unit: null });
    } else if (typeof x === 'string' && x.trim() !== '' && Number.isFinite(Number(x))) {
      out.push({ low: Number(x), high: Number(x), system: null, unit: null });
    } else if (v.type === 'Range') {
      const low = num(x.low?.value);
      const high = num(x.high?.value);
      if (low !== null || high !== null) {
        const q = x.low ?? x.high;
        out.push({ low, high, system: q?.system ?? null, unit: q?.code ?? q?.unit ?? null });
      }
    } else if (v.type === 'SampledData') {
      const o = num(x.origin?.value);
      if (o !== null) out.push({ low: o, high: o, system: x.origin.system ?? null, unit: x.origin.code ?? x.origin.unit ?? null });
    } else if (typeof x === 'object') {
      const n = num(x.value);
      if (n !== null) out.push({ low: n, high: n, system: x.system ?? null, unit: x.code ?? x.unit ?? null });
      // the human unit too, so `value||mg` matches a quantity coded in another way but displayed as mg
      if (n !== null && x.unit && x.code && x.unit !== x.code) out.push({ low: n, high: n, system: null, unit: x.unit });
    }
  }
  return out;
}

export function referencesOf(values: TypedValue[]): Array<[string | null, string]> {
  const out: Array<[string | null, string]> = [];
  for (const r of convertToSearchableReferences(values)) {
    if (!r || r.startsWith('identifier:') || r === 'undefined') continue;
    out.push(splitReference(clip(r)));
  }
  return out;
}

/** The logical identifiers of references (`Reference.identifier`), for `subject:identifier=system|value`. */
function referenceIdentifiers(values: TypedValue[]): Array<[string | null, string]> {
  const out: Array<[string | null, string]> = [];
  for (const v of values) {
    const id = v.type === 'Reference' ? v.value?.identifier : undefined;
    if (id?.value) out.push([id.system ? clip(String(id.system)) : null, clip(String(id.value))]);
  }
  return out;
}

export function urisOf(values: TypedValue[]): string[] {
  return convertToSearchableUris(values)
    .filter((u) => typeof u === 'string' && u !== '')
    .map(clip);
}

// ---- whole-resource extraction ----

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
