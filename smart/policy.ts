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
  /** 'Patient/<id>' that patient/ scopes (or, for a signed-in Patient, every scope) are confined to. */
  private readonly compartment?: string;
  /** A signed-in Patient: user/ scopes are confined to their compartment too. */
  private readonly allConfined: boolean;
  private access?: SearchAccess;

  constructor(grant: Grant) {
    this.actor = grant.actor;
    // patient/ scopes without a patient in context grant nothing (the token endpoint already drops them).
    this.scopes = grant.scopes.filter((s) => s.context !== 'patient' || grant.patient);
    this.allConfined = grant.userPatient !== undefined;
    if (grant.userPatient) this.compartment = `Patient/${grant.userPatient}`;
    else if (grant.patient && this.scopes.some((s) => s.context === 'patient')) this.compartment = `Patient/${grant.patient}`;
  }

  private confined(s: ClinicalScope): boolean {
    return this.compartment !== undefined && (this.allConfined || s.context === 'patient');
  }

  private granting(type: string, letter: Permission): ClinicalScope[] {
    return this.scopes.filter((s) => (s.type === '*' || s.type === type) && s.perms.has(letter));
  }

  /**
   * The scopes that decide access to one type. When a user/ or system/ scope grants the type, the type is not
   * confined to the patient and only those scopes count (the patient/ ones add nothing that could widen it
   * safely); otherwise the patient/ scopes do, inside the compartment.
   */
  private deciding(scopes: ClinicalScope[]): { scopes: ClinicalScope[]; confined: boolean } {
    const free = scopes.filter((s) => !this.confined(s));
    return free.length ? { scopes: free, confined: false } : { scopes, confined: scopes.length > 0 && this.compartment !== undefined };
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
    if (interaction === 'history' && this.deciding(scopes).scopes.every((s) => s.criteria.length > 0)) {
      throw forbidden(`History of ${resourceType} needs a scope without query restrictions (granted: ${scopes.map((s) => s.raw).join(' ')})`);
    }
  }

  assertResource(resource: Resource, interaction: Interaction): void {
    const letter = LETTER[interaction];
    const type = resource.resourceType;
    const granting = this.granting(type, letter);
    if (!granting.length) this.refuse(type, letter);
    const { scopes, confined } = this.deciding(granting);
    if (confined && !patientCompartmentsOf(resource).includes(this.compartment!)) {
      const what = resource.id ? `${type}/${resource.id}` : `this ${type}`;
      throw forbidden(`${what} is outside the patient compartment of ${this.compartment} that the token's ${type} scopes are limited to`);
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
    const exempt = new Set<string>();
    for (const type of types) {
      const { scopes, confined } = this.deciding(visible.filter((s) => s.type === type || s.type === '*'));
      if (!confined && this.compartment) exempt.add(type);
      if (scopes.every((s) => s.criteria.length > 0)) typeCriteria[type] = scopes.map((s) => s.criteria);
    }
    // Types reached only through a `*` scope: exempt when an unconfined `*` scope grants them.
    const wildcardFree = this.compartment !== undefined && visible.some((s) => s.type === '*' && !this.confined(s));
    this.access = {
      allowedTypes: wildcard ? '*' : types,
      ...(this.compartment ? { patientCompartments: [this.compartment] } : {}),
      ...(wildcardFree ? { compartmentExempt: '*' as const } : exempt.size ? { compartmentExempt: exempt } : {}),
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
