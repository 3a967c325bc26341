import type { Bundle, CodeSystem, CodeSystemConcept, OperationOutcomeIssue, Resource, StructureDefinition, ValueSet } from '@medplum/fhirtypes';

/**
 * Required bindings on `code` elements (Observation.status, Patient.gender, …), which @medplum/core's
 * validator does not check. Only value sets that can be enumerated from the R4 definitions are checked
 * (explicit concepts or whole complete CodeSystems); a value set with filters, imports or an external code
 * system is "not checkable" and left alone rather than guessed.
 */
interface RequiredBinding {
  /** Element path below the resource, e.g. ['contact', 'gender']. */
  path: string[];
  valueSet: string;
  codes: Set<string>;
}

const bindingsByType = new Map<string, RequiredBinding[]>();

/** The required code bindings per resource type, as JSON (the build stores it beside the compact definitions). */
export type RequiredBindingTable = Record<string, Array<{ path: string[]; valueSet: string; codes: string[] }>>;

/** Computes the table from the R4 resource profiles and the value sets and code systems they bind to. */
export function requiredBindingTable(profiles: Bundle, terminology: Bundle[]): RequiredBindingTable {
  const codeSystems = new Map<string, CodeSystem>();
  const valueSets = new Map<string, ValueSet>();
  for (const bundle of terminology) {
    for (const e of bundle.entry ?? []) {
      const r = e.resource as Resource | undefined;
      if (r?.resourceType === 'CodeSystem' && r.url) codeSystems.set(r.url, r);
      if (r?.resourceType === 'ValueSet' && r.url) valueSets.set(r.url, r);
    }
  }
  const expanded = new Map<string, string[] | null>();
  const expand = (url: string): string[] | null => {
    if (!expanded.has(url)) {
      const codes = enumerate(valueSets.get(url), codeSystems);
      expanded.set(url, codes ? [...codes] : null);
    }
    return expanded.get(url) ?? null;
  };
  const table: RequiredBindingTable = {};
  for (const e of profiles.entry ?? []) {
    const sd = e.resource as StructureDefinition | undefined;
    if (sd?.resourceType !== 'StructureDefinition' || sd.kind !== 'resource' || sd.abstract) continue;
    const list: RequiredBindingTable[string] = [];
    for (const el of sd.snapshot?.element ?? []) {
      const types = el.type?.map((t) => t.code) ?? [];
      const vs = el.binding?.valueSet?.split('|')[0];
      if (types.length !== 1 || types[0] !== 'code' || el.binding?.strength !== 'required' || !vs) continue;
      if (el.path?.includes('[x]')) continue;
      const codes = expand(vs);
      if (codes) list.push({ path: (el.path as string).split('.').slice(1), valueSet: vs, codes });
    }
    if (list.length) table[sd.type as string] = list;
  }
  return table;
}

/** Makes `checkRequiredBindings` check the bindings of `table`. */
export function indexRequiredBindings(table: RequiredBindingTable): void {
  bindingsByType.clear();
  for (const [type, list] of Object.entries(table)) {
    bindingsByType.set(type, list.map((b) => ({ path: b.path, valueSet: b.valueSet, codes: new Set(b.codes) })));
  }
}

function enumerate(vs: ValueSet | undefined, codeSystems: Map<string, CodeSystem>): Set<string> | null {
  const compose = vs?.compose;
  if (!compose?.include?.length || compose.exclude?.length) return null;
  const codes = new Set<string>();
  for (const inc of compose.include) {
    if (inc.valueSet?.length || inc.filter?.length || !inc.system) return null;
    if (inc.concept?.length) {
      for (const c of inc.concept) codes.add(c.code as string);
      continue;
    }
    const cs = codeSystems.get(inc.system);
    if (!cs || cs.content !== 'complete' || !cs.concept?.length) return null;
    const walk = (concepts: CodeSystemConcept[]) => {
      for (const c of concepts) {
        if (c.code) codes.add(c.code);
        if (c.concept) walk(c.concept);
      }
    };
    walk(cs.concept);
  }
  return codes.size ? codes : null;
}

/** Issues for every code outside its required value set, with the FHIRPath of the element. */
export function checkRequiredBindings(resource: Resource): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  for (const b of bindingsByType.get(resource.resourceType) ?? []) {
    visit(resource, b.path, 0, resource.resourceType, (value, expression) => {
      if (typeof value === 'string' && !b.codes.has(value)) {
        const sample = [...b.codes].slice(0, 8).join(', ');
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          diagnostics: `"${value}" is not in the required value set ${b.valueSet} (${sample}${b.codes.size > 8 ? ', …' : ''}) (${expression})`,
          expression: [expression],
        });
      }
    });
  }
  return issues;
}

function visit(node: unknown, path: string[], i: number, expr: string, fn: (value: unknown, expression: string) => void): void {
  if (node === undefined || node === null) return;
  if (Array.isArray(node)) {
    node.forEach((n, k) => visit(n, path, i, `${expr}[${k}]`, fn));
    return;
  }
  if (i === path.length) {
    fn(node, expr);
    return;
  }
  if (typeof node !== 'object') return;
  visit((node as Record<string, unknown>)[path[i]], path, i + 1, `${expr}.${path[i]}`, fn);
}
