/**
 * Token scopes → the core's AccessPolicy. The router asks it for every interaction (also inside transactions),
 * the search engine applies `searchAccess()` to matches and _include/_revinclude.
 */
import { matchesSearchRequest, parseSearchRequest } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { AccessPolicy, Interaction } from '../src/index.js';
import { forbidden } from '../src/index.js';
import { patientCompartmentsOf, type SearchAccess } from '../src/index.js';
import { loadFhirDefinitions } from '../src/index.js';
import type { ClinicalScope, Permission } from './scopes.js';

export interface Grant {
  /** 'Practitioner/123' or 'client:<id>' — who acts, for audit. */
  actor: string;
  scopes: ClinicalScope[];
  /** Patient id of the launch context; patient/ scopes confine access to its compartment. */
  patient?: string;
  /** The signed-in user is this Patient: every scope, user/ included, is confined to their compartment. */
  userPatient?: string;
}

const LETTER: Record<Interaction, Permission> = {
  read: 'r',
  vread: 'r',
  history: 'r',
  search: 's',
  create: 'c',
  update: 'u',
  patch: 'u',
  delete: 'd',
  // $operations are read-shaped here ($export, $everything); write-shaped operations check their own writes.
  operation: 'r',
};

const WORD: Record<Permission, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };

export class ScopePolicy implements AccessPolicy {
  readonly actor: string;
  private readonly scopes: ClinicalScope[];
  /** 'Patient/<id>' when patient/ scopes are in play (the whole token is then confined to it; see docs/smart.md). */
  private readonly compartment?: string;
  private access?: SearchAccess;

  constructor(grant: Grant) {
    this.actor = grant.actor;
    // patient/ scopes without a patient in context grant nothing (the token endpoint already drops them).
    this.scopes = grant.scopes.filter((s) => s.context !== 'patient' || grant.patient);
    if (grant.userPatient) this.compartment = `Patient/${grant.userPatient}`;
    else if (grant.patient && this.scopes.some((s) => s.context === 'patient')) this.compartment = `Patient/${grant.patient}`;
  }

  private granting(type: string, letter: Permission): ClinicalScope[] {
    return this.scopes.filter((s) => (s.type === '*' || s.type === type) && s.perms.has(letter));
  }

  private refuse(type: string, letter: Permission): never {
    const granted = this.scopes.map((s) => s.raw).join(' ') || '(none)';
    throw forbidden(`The token's scopes do not permit ${WORD[letter]} on ${type} (granted: ${granted})`);
  }

  assertType(resourceType: string, interaction: Interaction): void {
    const letter = LETTER[interaction];
    const scopes = this.granting(resourceType, letter);
    if (!scopes.length) this.refuse(resourceType, letter);
    // History is not filtered by granular criteria, so it needs an unrestricted grant.
    if (interaction === 'history' && scopes.every((s) => s.criteria.length > 0)) {
      throw forbidden(`History of ${resourceType} needs a scope without query restrictions (granted: ${scopes.map((s) => s.raw).join(' ')})`);
    }
  }

  assertResource(resource: Resource, interaction: Interaction): void {
    const letter = LETTER[interaction];
    const type = resource.resourceType;
    const scopes = this.granting(type, letter);
    if (!scopes.length) this.refuse(type, letter);
    if (this.compartment && !patientCompartmentsOf(resource).includes(this.compartment)) {
      const what = resource.id ? `${type}/${resource.id}` : `this ${type}`;
      throw forbidden(`${what} is outside the patient compartment of ${this.compartment} that the token is limited to`);
    }
    if (scopes.every((s) => s.criteria.length > 0) && !scopes.some((s) => matchesCriteria(resource, s))) {
      throw forbidden(`${type}${resource.id ? '/' + resource.id : ''} does not match the query restriction of any granted scope (${scopes.map((s) => s.raw).join(' ')})`);
    }
  }

  searchAccess(): SearchAccess {
    if (this.access) return this.access;
    const visible = this.scopes.filter((s) => s.perms.has('r') || s.perms.has('s'));
    const wildcard = visible.some((s) => s.type === '*');
    const types = new Set(visible.map((s) => s.type).filter((t) => t !== '*'));
    const typeCriteria: Record<string, Array<[string, string]>[]> = {};
    for (const type of types) {
      const forType = visible.filter((s) => s.type === type || s.type === '*');
      if (forType.every((s) => s.criteria.length > 0)) typeCriteria[type] = forType.map((s) => s.criteria);
    }
    this.access = {
      allowedTypes: wildcard ? '*' : types,
      ...(this.compartment ? { patientCompartments: [this.compartment] } : {}),
      ...(Object.keys(typeCriteria).length ? { typeCriteria } : {}),
    };
    return this.access;
  }
}

function matchesCriteria(resource: Resource, scope: ClinicalScope): boolean {
  loadFhirDefinitions();
  const query: Record<string, string[]> = {};
  for (const [name, value] of scope.criteria) (query[name] ??= []).push(value);
  return matchesSearchRequest(resource, parseSearchRequest(resource.resourceType, query));
}
