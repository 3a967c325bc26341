/**
 * Parses raw query parameters ([name, value] pairs, repeats kept) into a typed search: filters (AND of ORs),
 * result-control settings, and the list of parameters that were not understood.
 * Malformed values are a 400 naming the parameter; unknown parameters are collected for the caller to report.
 */
import { ConfluxError } from '../../errors.js';
import { badRequest } from '../outcome.js';
import { paramOf, paramsOf } from './definitions.js';
import type { ParamDef } from './definitions.js';
import { splitOr } from './values.js';

export type Filter =
  | { kind: 'value'; name: string; def: ParamDef; modifier?: string; values: string[] }
  | { kind: 'missing'; name: string; def: ParamDef; missing: boolean }
  | { kind: 'chain'; name: string; def: ParamDef; modifier?: string; targets: Array<{ type: string; inner: Filter }> }
  | { kind: 'has'; name: string; sourceType: string; refDef: ParamDef; inner: Filter };

export interface SortKey {
  def: ParamDef;
  descending: boolean;
}

export interface IncludeSpec {
  /** Source type ('*' = any). */
  sourceType: string;
  /** Reference parameter code ('*' = every reference parameter). */
  param: string;
  targetType?: string;
  iterate: boolean;
}

export interface ParsedSearch {
  /** Types searched: one for type-level search, several for system-level (`_type`). */
  types: string[];
  filters: Filter[];
  sort: SortKey[];
  count?: number;
  offset: number;
  /** Opaque keyset position from a `next` link (`_cursor`), see execute.ts. */
  cursor?: string;
  total?: 'none' | 'estimate' | 'accurate';
  summary?: 'true' | 'false' | 'count' | 'data' | 'text';
  elements?: string[];
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
  /** Parameters ignored: [name, reason]. */
  unknown: Array<[string, string]>;
}

/** Result parameters that change nothing in the result set and are accepted silently. */
const IGNORED = new Set(['_format', '_pretty']);

const MODIFIERS: Record<string, Set<string>> = {
  token: new Set(['not', 'text', 'of-type', 'missing']),
  string: new Set(['exact', 'contains', 'missing']),
  date: new Set(['missing']),
  number: new Set(['missing']),
  quantity: new Set(['missing']),
  reference: new Set(['missing', 'identifier']),
  uri: new Set(['below', 'above', 'missing']),
  composite: new Set([]),
};

/** A parameter the type does not define: strict handling answers 400, lenient handling drops it and says so. */
class Unknown extends ConfluxError {
  constructor(message: string) {
    super('invalid', message);
  }
}

/**
 * Parses one search parameter `name=value` against `resourceType`. Throws Unknown for parameters that do not
 * exist for the type (so the caller can choose lenient/strict), badRequest for malformed ones.
 */
export function parseFilter(resourceType: string, name: string, value: string, depth = 0): Filter {
  if (name.startsWith('_has:')) return parseHas(resourceType, name, value, depth);
  const dot = name.indexOf('.');
  if (dot > 0) return parseChain(resourceType, name, value, dot, depth);
  const [code, modifier, ...rest] = name.split(':');
  if (rest.length) throw badRequest(`Search parameter "${name}" has more than one modifier`, name);
  const def = paramOf(resourceType, code);
  if (!def) throw new Unknown(`Unknown search parameter "${code}" for ${resourceType}`);
  if (modifier !== undefined) {
    const allowed = def.type === 'reference' ? isResourceType(modifier) || MODIFIERS.reference.has(modifier) : MODIFIERS[def.type]?.has(modifier);
    if (!allowed) throw badRequest(`Modifier ":${modifier}" is not supported for ${def.type} parameter "${code}"`, name);
    if (def.type === 'reference' && isResourceType(modifier) && def.targets.length && !def.targets.includes(modifier)) {
      throw badRequest(`Search parameter "${code}" cannot refer to ${modifier}`, name);
    }
  }
  if (modifier === 'missing') {
    if (value !== 'true' && value !== 'false') throw badRequest(`"${name}" must be true or false, got "${value}"`, name);
    return { kind: 'missing', name, def, missing: value === 'true' };
  }
  if (value === '') throw badRequest(`Search parameter "${name}" has an empty value`, name);
  const values = splitOr(value);
  if (values.some((v) => v === '')) throw badRequest(`Search parameter "${name}" has an empty value in "${value}"`, name);
  return { kind: 'value', name, def, modifier, values };
}

function isResourceType(s: string): boolean {
  return /^[A-Z][A-Za-z]+$/.test(s) && paramsOf(s).size > 0;
}

/** `subject:Patient.name=x`, `subject.identifier=x` (one level; deeper chains are rejected). */
function parseChain(resourceType: string, name: string, value: string, dot: number, depth: number): Filter {
  const head = name.slice(0, dot);
  const tail = name.slice(dot + 1);
  const [code, typeModifier, ...rest] = head.split(':');
  if (rest.length) throw badRequest(`Chained parameter "${name}" is malformed`, name);
  const def = paramOf(resourceType, code);
  if (!def) throw new Unknown(`Unknown search parameter "${code}" for ${resourceType}`);
  if (def.type !== 'reference') throw badRequest(`"${code}" is not a reference parameter and cannot be chained`, name);
  if (depth >= 1 || tail.includes('.')) throw badRequest(`Chains deeper than one level are not supported ("${name}")`, name);
  let candidates: string[];
  if (typeModifier !== undefined) {
    if (!isResourceType(typeModifier)) throw badRequest(`"${typeModifier}" in "${name}" is not a resource type`, name);
    candidates = [typeModifier];
  } else {
    candidates = def.targets;
  }
  const innerCode = tail.split(':')[0];
  const targets: Array<{ type: string; inner: Filter }> = [];
  for (const type of candidates) {
    if (!paramOf(type, innerCode) && !innerCode.startsWith('_has')) continue;
    targets.push({ type, inner: parseFilter(type, tail, value, depth + 1) });
  }
  if (targets.length === 0) {
    throw badRequest(`No target type of "${code}" (${candidates.join(', ') || 'any'}) has a search parameter "${innerCode}"`, name);
  }
  return { kind: 'chain', name, def, modifier: typeModifier, targets };
}

/** `_has:Observation:patient:code=1234-5` → ids referenced by Observations (via patient) that match code. */
function parseHas(resourceType: string, name: string, value: string, depth: number): Filter {
  const parts = name.split(':');
  if (parts.length < 4) throw badRequest(`"${name}" must look like _has:Type:referenceParam:param`, name);
  const [, sourceType, refCode, ...innerParts] = parts;
  if (depth >= 1 || innerParts[0].startsWith('_has')) throw badRequest(`Nested _has is not supported ("${name}")`, name);
  if (!isResourceType(sourceType)) throw badRequest(`"${sourceType}" in "${name}" is not a resource type`, name);
  const refDef = paramOf(sourceType, refCode);
  if (!refDef || refDef.type !== 'reference') {
    throw badRequest(`"${refCode}" is not a reference parameter of ${sourceType} (in "${name}")`, name);
  }
  if (refDef.targets.length && !refDef.targets.includes(resourceType)) {
    throw badRequest(`${sourceType}.${refCode} cannot refer to ${resourceType} (in "${name}")`, name);
  }
  let inner: Filter;
  try {
    inner = parseFilter(sourceType, innerParts.join(':'), value, depth + 1);
  } catch (e) {
    if (e instanceof Unknown) throw badRequest(`${e.message} (in "${name}")`, name);
    throw e;
  }
  return { kind: 'has', name, sourceType, refDef, inner };
}

function parseInclude(name: string, value: string, reverse: boolean, types: string[]): IncludeSpec {
  const iterate = name.endsWith(':iterate') || name.endsWith(':recurse');
  if (value === '*') return { sourceType: '*', param: '*', iterate };
  const [sourceType, param, targetType, ...rest] = value.split(':');
  if (!sourceType || !param || rest.length) {
    throw badRequest(`${name} must be "Type:param" or "Type:param:TargetType", got "${value}"`, name);
  }
  if (!isResourceType(sourceType)) throw badRequest(`${name}: "${sourceType}" is not a resource type`, name);
  if (param !== '*') {
    const def = paramOf(sourceType, param);
    if (!def || def.type !== 'reference') throw badRequest(`${name}: "${param}" is not a reference parameter of ${sourceType}`, name);
  }
  if (targetType !== undefined && !isResourceType(targetType)) {
    throw badRequest(`${name}: "${targetType}" is not a resource type`, name);
  }
  if (!reverse && !iterate && !types.includes(sourceType)) {
    throw badRequest(`${name}=${value}: source type ${sourceType} is not the type searched`, name);
  }
  return { sourceType, param, targetType, iterate };
}

function parseCount(name: string, value: string): number {
  if (!/^\d+$/.test(value)) throw badRequest(`${name} must be a non-negative integer, got "${value}"`, name);
  return Number(value);
}

/**
 * `types`: the searched type(s). For system-level search, filters must exist on every type searched.
 */
export function parseSearch(types: string[], params: Array<[string, string]>): ParsedSearch {
  const out: ParsedSearch = { types, filters: [], sort: [], offset: 0, include: [], revinclude: [], unknown: [] };
  for (const [rawName, value] of params) {
    const name = rawName.trim();
    if (IGNORED.has(name) || name === '_type') continue;
    switch (name) {
      case '_count':
        out.count = parseCount(name, value);
        continue;
      case '_offset':
        out.offset = parseCount(name, value);
        continue;
      case '_cursor':
        if (!/^[A-Za-z0-9_-]{1,2000}$/.test(value)) throw badRequest(`_cursor is not a cursor from a next link: "${value}"`, '_cursor');
        out.cursor = value;
        continue;
      case '_total':
        if (!['none', 'estimate', 'accurate'].includes(value)) throw badRequest(`_total must be none, estimate or accurate, got "${value}"`, '_total');
        out.total = value as ParsedSearch['total'];
        continue;
      case '_summary':
        if (!['true', 'false', 'count', 'data', 'text'].includes(value)) {
          throw badRequest(`_summary must be true, false, count, data or text, got "${value}"`, '_summary');
        }
        out.summary = value as ParsedSearch['summary'];
        continue;
      case '_elements':
        out.elements = value.split(',').map((e) => e.trim()).filter(Boolean);
        continue;
      case '_sort':
        out.sort.push(...parseSort(types, value));
        continue;
    }
    if (name === '_include' || name.startsWith('_include:')) {
      out.include.push(parseInclude(name, value, false, types));
      continue;
    }
    if (name === '_revinclude' || name.startsWith('_revinclude:')) {
      out.revinclude.push(parseInclude(name, value, true, types));
      continue;
    }
    try {
      const parsed = types.map((t) => parseFilter(t, name, value));
      out.filters.push(parsed[0]);
    } catch (e) {
      if (e instanceof Unknown) out.unknown.push([name, e.message]);
      else throw e;
    }
  }
  if (out.cursor && out.offset) throw badRequest('_cursor and _offset cannot be combined', '_cursor');
  return out;
}

function parseSort(types: string[], value: string): SortKey[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((key) => {
      const descending = key.startsWith('-');
      const code = descending ? key.slice(1) : key;
      const defs = types.map((t) => paramOf(t, code));
      const def = defs[0];
      if (!def || defs.some((d) => !d)) throw badRequest(`Cannot sort by unknown parameter "${code}"`, '_sort');
      if (def.type === 'composite' || def.column === 'compartments') throw badRequest(`Cannot sort by ${def.type} parameter "${code}"`, '_sort');
      return { def, descending };
    });
}

export { Unknown as UnknownParameterError };
