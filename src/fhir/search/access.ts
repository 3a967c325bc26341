/**
 * Access rules of a search: which types the caller may see, and the WHERE conditions (on a `resource` alias)
 * that confine the rest to the caller's patient compartments and granular-scope criteria.
 */
import type { SearchAccess } from './index.js';
import { parseFilter, UnknownParameterError } from './parse.js';
import { Sql, filterCondition } from './query.js';

/** Whether `patientCompartments` confines resources of `type` under `access`. */
export function compartmentApplies(access: SearchAccess | undefined, type: string): boolean {
  if (!access?.patientCompartments) return false;
  const exempt = access.compartmentExempt;
  return !(exempt === '*' || exempt?.has(type));
}

/** WHERE conditions (on alias `r`) that restrict what the caller may see. */
export function accessConditions(access: SearchAccess | undefined, types: string[], sql: Sql, alias = 'r'): string[] {
  const conds: string[] = [];
  if (!access) return conds;
  const exempt = types.filter((t) => !compartmentApplies(access, t));
  if (exempt.length < types.length) {
    // Only when some type is confined: a parameter the statement does not reference has no type PostgreSQL can infer.
    const inCompartment = `${alias}.compartments && ${sql.p(access.patientCompartments)}::text[]`;
    conds.push(exempt.length === 0 ? inCompartment : `(${alias}.resource_type = ANY(${sql.p(exempt)}::text[]) OR ${inCompartment})`);
  }
  if (access.typeCriteria) {
    for (const type of types) {
      const alternatives = access.typeCriteria[type];
      if (!alternatives) continue;
      // Each alternative (one granted scope) is an AND of criteria; any one alternative grants visibility.
      const alts = alternatives.map((criteria) => {
        const parts = criteria.map(([name, value]) => {
          let f;
          try {
            f = parseFilter(type, name, value);
          } catch (e) {
            if (e instanceof UnknownParameterError) throw new Error(`access criterion ${type}?${name}: ${e.message}`);
            throw e;
          }
          return filterCondition(f, alias, [type], sql);
        });
        return parts.length ? `(${parts.join(' AND ')})` : 'true';
      });
      const granted = alts.length ? `(${alts.join(' OR ')})` : 'false';
      conds.push(types.length === 1 ? granted : `(${alias}.resource_type <> ${sql.p(type)} OR ${granted})`);
    }
  }
  return conds;
}

export function visibleTypes(types: string[], access: SearchAccess | undefined): string[] {
  const allowed = access?.allowedTypes;
  if (!allowed || allowed === '*') return types;
  return types.filter((t) => allowed.has(t));
}
