/**
 * SMART scopes (App Launch 2.x §scopes): v1 `patient/*.read`, `user/Observation.write`, v2 `patient/Observation.rs`,
 * granular `patient/Observation.rs?category=system|code`, plus the launch/identity scopes. Everything is
 * normalised to v2 permission letters so v1 and v2 requests compare the same way.
 */
import { getSearchParameter } from '@medplum/core';
import { loadFhirDefinitions } from '../src/index.js';
import { isResourceType } from '../src/index.js';
import { ConfluxError } from '../src/index.js';

export type Permission = 'c' | 'r' | 'u' | 'd' | 's';
export type ScopeContext = 'patient' | 'user' | 'system';

export interface ClinicalScope {
  raw: string;
  context: ScopeContext;
  /** A resource type or '*'. */
  type: string;
  perms: Set<Permission>;
  /** Granular v2 restriction: AND of search criteria (name, value). Empty → none. */
  criteria: Array<[string, string]>;
}

/** Non-resource scopes this server understands. */
export const SPECIAL_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;
const SPECIAL = new Set<string>(SPECIAL_SCOPES);

export interface ParsedScopes {
  clinical: ClinicalScope[];
  special: Set<string>;
}

export class ScopeError extends ConfluxError {
  constructor(message: string) {
    super('scope-invalid', message);
  }
}

const CLINICAL = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?(.+))?$/;
const V2_ORDER = 'cruds';

function permsOf(raw: string, action: string): Set<Permission> {
  if (action === 'read') return new Set(['r', 's']);
  if (action === 'write') return new Set(['c', 'u', 'd']);
  if (action === '*') return new Set(['c', 'r', 'u', 'd', 's']);
  // v2: letters in the order c r u d s, each at most once
  let last = -1;
  const out = new Set<Permission>();
  for (const ch of action) {
    const i = V2_ORDER.indexOf(ch);
    if (i < 0 || i <= last) throw new ScopeError(`scope "${raw}": permissions must be read, write, * or a subset of "cruds" in that order`);
    last = i;
    out.add(ch as Permission);
  }
  if (!out.size) throw new ScopeError(`scope "${raw}": no permission given`);
  return out;
}

export function parseClinicalScope(raw: string): ClinicalScope {
  const m = CLINICAL.exec(raw);
  if (!m) throw new ScopeError(`scope "${raw}" is not a SMART scope (context/Type.permissions[?query])`);
  const [, context, type, action, query] = m;
  if (type !== '*' && !isResourceType(type)) throw new ScopeError(`scope "${raw}": "${type}" is not an R4 resource type`);
  const perms = permsOf(raw, action);
  const criteria: Array<[string, string]> = [];
  if (query) {
    if (action === 'read' || action === 'write' || action === '*') {
      throw new ScopeError(`scope "${raw}": query restrictions need v2 permissions (e.g. .rs?...)`);
    }
    // A wildcard type cannot carry criteria: search parameters are defined per type.
    if (type === '*') throw new ScopeError(`scope "${raw}": query restrictions need a resource type, not *`);
    loadFhirDefinitions();
    for (const [name, value] of new URLSearchParams(query)) {
      const code = name.split(':')[0];
      if (!getSearchParameter(type, code)) throw new ScopeError(`scope "${raw}": "${code}" is not a search parameter of ${type}`);
      if (!value) throw new ScopeError(`scope "${raw}": criterion "${name}" has no value`);
      criteria.push([name, value]);
    }
  }
  return { raw, context: context as ScopeContext, type, perms, criteria };
}

/** Parses a space-separated scope string; throws ScopeError naming the first scope it does not understand. */
export function parseScopes(scope: string | undefined): ParsedScopes {
  const out: ParsedScopes = { clinical: [], special: new Set() };
  for (const raw of (scope ?? '').split(/\s+/).filter(Boolean)) {
    if (SPECIAL.has(raw)) out.special.add(raw);
    else out.clinical.push(parseClinicalScope(raw));
  }
  return out;
}

/** Scope strings split, deduplicated, order kept. */
export function scopeList(scope: string | undefined): string[] {
  return [...new Set((scope ?? '').split(/\s+/).filter(Boolean))];
}

function sameCriteria(a: Array<[string, string]>, b: Array<[string, string]>): boolean {
  const key = (c: Array<[string, string]>) => c.map(([n, v]) => `${n}=${v}`).sort().join('&');
  return key(a) === key(b);
}

/** Does `granted` (one scope) allow everything `wanted` asks for? */
export function clinicalCovers(granted: ClinicalScope, wanted: ClinicalScope): boolean {
  if (granted.context !== wanted.context) return false;
  if (granted.type !== '*' && granted.type !== wanted.type) return false;
  for (const p of wanted.perms) if (!granted.perms.has(p)) return false;
  // An unrestricted grant covers any restriction; a restricted one covers only the same restriction.
  return granted.criteria.length === 0 || sameCriteria(granted.criteria, wanted.criteria);
}

/**
 * Scopes of `requested` that `allowed` does not cover (empty → the request is within the allowance).
 * Used against a client's registration and, on refresh, against the original grant.
 */
export function uncoveredScopes(requested: string, allowed: string): string[] {
  const allow = parseScopes(allowed);
  const out: string[] = [];
  for (const raw of scopeList(requested)) {
    if (SPECIAL.has(raw)) {
      if (!allow.special.has(raw)) out.push(raw);
      continue;
    }
    const wanted = parseClinicalScope(raw);
    if (!allow.clinical.some((g) => clinicalCovers(g, wanted))) out.push(raw);
  }
  return out;
}

/** The scope that lets a token use the admin API: full system access (v1 `system/*.*` or v2 `system/*.cruds`). */
export function isAdminScope(s: ClinicalScope): boolean {
  return s.context === 'system' && s.type === '*' && s.perms.size === 5 && s.criteria.length === 0;
}

export const DEFAULT_APP_SCOPE =
  'launch launch/patient launch/encounter openid fhirUser profile offline_access online_access patient/*.cruds user/*.cruds';
export const DEFAULT_BACKEND_SCOPE = 'system/*.rs';
