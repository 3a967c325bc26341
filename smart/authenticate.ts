/** Bearer token → AccessPolicy for every FHIR (and DICOMweb, bulk) request; admin-scoped tokens for /admin. */
import type { Request } from 'express';
import type { AccessPolicy } from '../src/index.js';
import { FhirError, outcome } from '../src/index.js';
import { fhirBase, type SmartCore } from './core.js';
import { ScopePolicy } from './policy.js';
import { isAdminScope, parseScopes, type ParsedScopes } from './scopes.js';
import { verifyAccessToken, type AccessClaims } from './tokens.js';

const quote = (s: string) => s.replace(/["\\]/g, "'");

/** RFC 6750 §3: no error code when no token was sent; invalid_token / invalid_request otherwise. */
export function unauthorized(diagnostics: string, error?: 'invalid_token' | 'invalid_request'): FhirError {
  const challenge = error ? `Bearer realm="conflux", error="${error}", error_description="${quote(diagnostics)}"` : 'Bearer realm="conflux"';
  return new FhirError(401, outcome('error', 'login', diagnostics), { 'WWW-Authenticate': challenge });
}

export class BearerAuth {
  /** Parsed scope strings: tokens of one grant share one, so parsing happens once. */
  private readonly scopeCache = new Map<string, ParsedScopes>();

  constructor(private readonly core: SmartCore) {}

  private scopes(scope: string): ParsedScopes {
    let parsed = this.scopeCache.get(scope);
    if (!parsed) {
      parsed = parseScopes(scope);
      if (this.scopeCache.size > 1000) this.scopeCache.clear();
      this.scopeCache.set(scope, parsed);
    }
    return parsed;
  }

  async claims(req: Request): Promise<AccessClaims> {
    const header = req.headers.authorization;
    if (!header) throw unauthorized('A SMART access token is required (Authorization: Bearer ...)');
    const m = /^Bearer\s+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header);
    if (!m) throw unauthorized('The Authorization header must be "Bearer <access token>"', 'invalid_request');
    try {
      return await verifyAccessToken(this.core, m[1]);
    } catch (err) {
      throw unauthorized(`The access token is not valid: ${(err as Error).message}`, 'invalid_token');
    }
  }

  readonly authenticate = async (req: Request): Promise<AccessPolicy> => {
    // The CapabilityStatement is public (clients discover the SMART endpoints from it); nothing else is.
    if (!req.headers.authorization && req.method === 'GET' && req.path.replace(/\/+$/, '') === '/metadata') return anonymousMetadata;
    const claims = await this.claims(req);
    const base = `${fhirBase(this.core)}/`;
    const fhirUser = claims.fhirUser?.startsWith(base) ? claims.fhirUser.slice(base.length) : undefined;
    return new ScopePolicy({
      actor: fhirUser ?? `client:${claims.client_id}`,
      scopes: this.scopes(claims.scope).clinical,
      patient: claims.patient,
      userPatient: fhirUser?.startsWith('Patient/') ? fhirUser.slice(8) : undefined,
    });
  };

  /** A token with full system access (system/*.* or system/*.cruds) may use the admin API. */
  readonly authorizeAdmin = async (req: Request): Promise<boolean> => {
    if (!/^Bearer\s/i.test(req.headers.authorization ?? '')) return false;
    try {
      const claims = await this.claims(req);
      return this.scopes(claims.scope).clinical.some(isAdminScope);
    } catch {
      return false;
    }
  };
}

const noToken = () => unauthorized('A SMART access token is required (Authorization: Bearer ...)');
/** Serves GET /metadata only: the metadata handler consults no policy, and anything else refuses. */
const anonymousMetadata: AccessPolicy = {
  actor: 'anonymous',
  assertType: () => {
    throw noToken();
  },
  assertResource: () => {
    throw noToken();
  },
  searchAccess: () => {
    throw noToken();
  },
};
