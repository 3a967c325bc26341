/**
 * Per-type conversion of FHIRPath results into index values (tokens, strings, dates, quantities, references,
 * URIs): the same functions serve top-level parameters and composite parts (extract.ts).
 */
import { convertToSearchableReferences, convertToSearchableTokens, convertToSearchableUris } from '@medplum/core';
import type { TypedValue } from '@medplum/core';
import { MAX_DATE, MAX_INDEXED_TEXT, MIN_DATE, dateRange } from './values.js';
import type { DateRange } from './values.js';

/** System used to route token display texts (for :text) out of convertToSearchableTokens. */
export const TEXT_SYSTEM = '\u0000text';

const LOCAL_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]+)?$/;

/** 'Patient/1' → ['Patient', '1']; anything else (absolute, canonical, urn) → [null, whole string]. */
export function splitReference(ref: string): [string | null, string] {
  const m = LOCAL_REF.exec(ref);
  return m ? [m[1], m[2]] : [null, ref];
}

export function clip(s: string): string {
  return s.length > MAX_INDEXED_TEXT ? s.slice(0, MAX_INDEXED_TEXT) : s;
}


/** Types a token can be read from; anything else (a Quantity reached through `value.as(...)`) is skipped. */
const TOKEN_TYPES = new Set([
  'CodeableConcept', 'Coding', 'Identifier', 'ContactPoint', 'code', 'string', 'boolean', 'uri', 'url', 'canonical',
  'id', 'oid', 'uuid', 'integer', 'positiveInt', 'unsignedInt', 'markdown',
]);
export const STRING_TYPES = new Set(['string', 'markdown', 'code', 'id', 'uri', 'url', 'HumanName', 'Address', 'CodeableConcept', 'Coding']);

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
export function identifierTypes(values: TypedValue[]): Array<[string, string]> {
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
export function referenceIdentifiers(values: TypedValue[]): Array<[string | null, string]> {
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
