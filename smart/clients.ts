/** Registered SMART clients: apps (public or client_secret_basic) and backend services (private_key_jwt). */
import { randomUUID } from 'node:crypto';
import type { JWK } from 'jose';
import type { Queryable } from '../src/index.js';
import { badRequest } from '../src/index.js';
import { DEFAULT_APP_SCOPE, DEFAULT_BACKEND_SCOPE, parseScopes, ScopeError } from './scopes.js';
import { randomToken, sha256 } from './secrets.js';

export type ClientAuthType = 'public' | 'confidential-symmetric' | 'confidential-asymmetric';

export interface Client {
  clientId: string;
  name: string;
  authType: ClientAuthType;
  secretHash?: string;
  redirectUris: string[];
  launchUri?: string;
  jwks?: { keys: JWK[] };
  jwksUrl?: string;
  scope: string;
}

export interface NewClient {
  name?: unknown;
  redirect_uris?: unknown;
  launch_uri?: unknown;
  confidential?: unknown;
  jwks?: unknown;
  jwks_url?: unknown;
  scope?: unknown;
}

interface ClientRow {
  client_id: string;
  name: string;
  auth_type: ClientAuthType;
  secret_hash: string | null;
  redirect_uris: string[];
  launch_uri: string | null;
  jwks: { keys: JWK[] } | string | null;
  jwks_url: string | null;
  scope: string;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https, or http to a loopback host (development); no fragments (RFC 6749 §3.1.2). */
function checkUrl(what: string, raw: unknown): string {
  if (typeof raw !== 'string' || !raw) throw badRequest(`${what} must be a URL string`);
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw badRequest(`${what} "${raw}" is not an absolute URL`);
  }
  if (u.hash) throw badRequest(`${what} "${raw}" must not contain a fragment`);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && LOOPBACK.has(u.hostname))) {
    throw badRequest(`${what} "${raw}" must use https (plain http is accepted only for localhost/127.0.0.1)`);
  }
  return raw;
}

/** A public JWKS of RSA/EC keys; private key material is refused (a client must never send it). */
export function checkJwks(raw: unknown): { keys: JWK[] } {
  const jwks = (typeof raw === 'string' ? JSON.parse(raw) : raw) as { keys?: unknown };
  if (!jwks || !Array.isArray(jwks.keys) || jwks.keys.length === 0) throw badRequest('jwks must be a JSON Web Key Set: {"keys": [...]} with at least one key');
  for (const [i, k] of (jwks.keys as JWK[]).entries()) {
    if (k.kty !== 'RSA' && k.kty !== 'EC') throw badRequest(`jwks.keys[${i}]: kty must be RSA or EC, got "${String(k.kty)}"`);
    if ('d' in k || 'p' in k) throw badRequest(`jwks.keys[${i}] contains PRIVATE key material; register only the public key`);
    if (!k.kid) throw badRequest(`jwks.keys[${i}] has no "kid" (SMART Backend Services requires one)`);
  }
  return { keys: jwks.keys as JWK[] };
}

export async function registerClient(db: Queryable, input: NewClient): Promise<{ client: Client; clientSecret?: string }> {
  const name = typeof input.name === 'string' && input.name.trim() ? input.name.trim() : undefined;
  if (!name) throw badRequest('name is required');
  const redirectUris = ([] as unknown[]).concat(input.redirect_uris ?? []).map((u) => checkUrl('redirect_uri', u));
  const launchUri = input.launch_uri === undefined ? undefined : checkUrl('launch_uri', input.launch_uri);
  if (input.jwks !== undefined && input.jwks_url !== undefined) throw badRequest('give either jwks or jwks_url, not both');
  const jwks = input.jwks !== undefined ? checkJwks(input.jwks) : undefined;
  const jwksUrl = input.jwks_url !== undefined ? checkUrl('jwks_url', input.jwks_url) : undefined;
  const asymmetric = Boolean(jwks || jwksUrl);
  const confidential = input.confidential === true || input.confidential === 'true';
  const authType: ClientAuthType = asymmetric ? 'confidential-asymmetric' : confidential ? 'confidential-symmetric' : 'public';
  if (!asymmetric && redirectUris.length === 0) throw badRequest('an app client needs at least one redirect_uri (or register jwks/jwks_url for a backend service)');
  const scopeRaw = ([] as unknown[]).concat(input.scope ?? []).join(' ').trim();
  const scope = scopeRaw || (asymmetric && redirectUris.length === 0 ? DEFAULT_BACKEND_SCOPE : DEFAULT_APP_SCOPE);
  try {
    parseScopes(scope);
  } catch (e) {
    if (e instanceof ScopeError) throw badRequest(e.message, 'scope');
    throw e;
  }
  const clientSecret = authType === 'confidential-symmetric' ? randomToken() : undefined;
  const client: Client = {
    clientId: randomUUID(),
    name,
    authType,
    secretHash: clientSecret ? sha256(clientSecret) : undefined,
    redirectUris,
    launchUri,
    jwks,
    jwksUrl,
    scope,
  };
  await db.query(
    `INSERT INTO smart_client (client_id, name, auth_type, secret_hash, redirect_uris, launch_uri, jwks, jwks_url, scope)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [client.clientId, name, authType, client.secretHash ?? null, redirectUris, launchUri ?? null, jwks ? JSON.stringify(jwks) : null, jwksUrl ?? null, scope],
  );
  return { client, clientSecret };
}

function fromRow(r: ClientRow): Client {
  return {
    clientId: r.client_id,
    name: r.name,
    authType: r.auth_type,
    secretHash: r.secret_hash ?? undefined,
    redirectUris: r.redirect_uris ?? [],
    launchUri: r.launch_uri ?? undefined,
    jwks: r.jwks ? (typeof r.jwks === 'string' ? JSON.parse(r.jwks) : r.jwks) : undefined,
    jwksUrl: r.jwks_url ?? undefined,
    scope: r.scope,
  };
}

export async function findClient(db: Queryable, clientId: string): Promise<Client | undefined> {
  const r = await db.query<ClientRow>('SELECT * FROM smart_client WHERE client_id = $1', [clientId]);
  return r.rows[0] ? fromRow(r.rows[0]) : undefined;
}

export async function listClients(db: Queryable): Promise<Client[]> {
  const r = await db.query<ClientRow>('SELECT * FROM smart_client ORDER BY created_at, client_id');
  return r.rows.map(fromRow);
}

/** What the admin API shows: never the secret hash. */
export function publicView(c: Client): Record<string, unknown> {
  return {
    client_id: c.clientId,
    name: c.name,
    token_endpoint_auth_method: c.authType === 'public' ? 'none' : c.authType === 'confidential-symmetric' ? 'client_secret_basic' : 'private_key_jwt',
    redirect_uris: c.redirectUris,
    ...(c.launchUri ? { launch_uri: c.launchUri } : {}),
    ...(c.jwksUrl ? { jwks_url: c.jwksUrl } : {}),
    ...(c.jwks ? { jwks: c.jwks } : {}),
    scope: c.scope,
  };
}
