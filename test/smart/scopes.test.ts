import { describe, expect, it } from 'vitest';
import { ScopePolicy } from '../../smart/policy.js';
import { isAdminScope, parseScopes, ScopeError, uncoveredScopes } from '../../smart/scopes.js';

describe('SMART scopes', () => {
  it('parses v1 and v2 scopes to the same permissions', () => {
    const [v1, v2, star, write] = parseScopes('patient/*.read patient/*.rs user/Observation.* user/Observation.write').clinical;
    expect([...v1.perms].sort()).toEqual(['r', 's']);
    expect([...v2.perms].sort()).toEqual(['r', 's']);
    expect([...star.perms].sort()).toEqual(['c', 'd', 'r', 's', 'u']);
    expect([...write.perms].sort()).toEqual(['c', 'd', 'u']);
  });

  it('parses granular criteria and checks the parameter exists', () => {
    const s = parseScopes('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs').clinical[0];
    expect(s.criteria).toEqual([['category', 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs']]);
    expect(() => parseScopes('patient/Observation.rs?nonsense=1')).toThrow(/not a search parameter/);
    expect(() => parseScopes('patient/*.rs?category=x')).toThrow(ScopeError);
  });

  it('refuses malformed scopes with a message naming the scope', () => {
    expect(() => parseScopes('patient/Observation.sr')).toThrow(/patient\/Observation\.sr/);
    expect(() => parseScopes('patient/Foo.rs')).toThrow(/not an R4 resource type/);
    expect(() => parseScopes('admin')).toThrow(/not a SMART scope/);
  });

  it('coverage: narrower requests pass, wider ones are named', () => {
    expect(uncoveredScopes('patient/Observation.rs launch/patient', 'launch/patient patient/*.read')).toEqual([]);
    expect(uncoveredScopes('patient/Observation.cruds', 'patient/*.rs')).toEqual(['patient/Observation.cruds']);
    expect(uncoveredScopes('user/Observation.rs', 'patient/*.rs')).toEqual(['user/Observation.rs']);
    expect(uncoveredScopes('offline_access', 'online_access')).toEqual(['offline_access']);
    const vitals = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';
    expect(uncoveredScopes(vitals, 'patient/Observation.rs')).toEqual([]);
    expect(uncoveredScopes('patient/Observation.rs', vitals)).toEqual(['patient/Observation.rs']);
  });

  it('admin scope is full system access only', () => {
    expect(parseScopes('system/*.* system/*.cruds').clinical.every(isAdminScope)).toBe(true);
    expect(parseScopes('system/*.rs user/*.cruds').clinical.some(isAdminScope)).toBe(false);
  });

  it('policy: types, interactions and search restrictions', () => {
    const p = new ScopePolicy({ actor: 'x', patient: 'p1', scopes: parseScopes('patient/Observation.rs patient/Patient.r').clinical });
    expect(() => p.assertType('Observation', 'search')).not.toThrow();
    expect(() => p.assertType('Observation', 'create')).toThrow(/create on Observation/);
    expect(() => p.assertType('Patient', 'search')).toThrow(/search on Patient/);
    expect(p.searchAccess()).toEqual({ allowedTypes: new Set(['Observation', 'Patient']), patientCompartments: ['Patient/p1'] });
    expect(() => p.assertResource({ resourceType: 'Observation', status: 'final', code: {}, subject: { reference: 'Patient/p2' } } as any, 'read')).toThrow(/outside the patient compartment/);
    // patient/ scopes without a patient in context grant nothing
    const none = new ScopePolicy({ actor: 'x', scopes: parseScopes('patient/*.rs').clinical });
    expect(() => none.assertType('Observation', 'read')).toThrow();
  });
});
