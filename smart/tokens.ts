/**
 * Issuing and checking tokens. Access tokens are signed JWTs (RFC 9068 `at+jwt`) that any process can verify with
 * the published keys; each also has a row (by jti) so revocation holds everywhere. Refresh tokens are opaque
 * random values stored hashed, rotated on every use; presenting a rotated one again revokes the whole grant.
 */
import { randomUUID } from 'node:crypto';
import { jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { Queryable } from '../src/index.js';
import type { Client } from './clients.js';
import { authUrl, fhirBase, OAuthError, type SmartCore } from './core.js';
import { scopeList, uncoveredScopes } from './scopes.js';
import { randomToken, sha256 } from './secrets.js';
import { findUser } from './users.js';
import { ConfluxError } from '../src/index.js';

export interface GrantContext {
  patient?: string;
  encounter?: string;
  needPatientBanner?: boolean;
}

export interface IssueInput {
  client: Client;
  userId?: string;
  scope: string;
  context: GrantContext;
  /** Ties together every token of one grant (the code, or a client_credentials request). */
  family: string;
  backend?: boolean;
}

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
  refresh_token?: string;
  id_token?: string;
  patient?: string;
  encounter?: string;
  need_patient_banner?: boolean;
  smart_style_url?: string;
}

export interface AccessClaims extends JWTPayload {
  client_id: string;
  scope: string;
  patient?: string;
  encounter?: string;
  fhirUser?: string;
}

const ALGS = ['RS384', 'ES384'];

interface TokenRow {
  id: string;
  kind: 'access' | 'refresh';
  client_id: string;
  user_id: string | null;
  scope: string;
  context: GrantContext | string;
  family: string;
  issued_at: Date;
  expires_at: Date;
  revoked: boolean;
  rotated_at: Date | null;
}

const ctxOf = (row: TokenRow): GrantContext => (typeof row.context === 'string' ? (JSON.parse(row.context) as GrantContext) : row.context);

export async function issueTokens(core: SmartCore, input: IssueInput, q: Queryable = core.db): Promise<TokenResponse> {
  const { client, scope, context } = input;
  const scopes = scopeList(scope);
  const user = input.userId ? await findUser(q, input.userId) : undefined;
  const ttl = input.backend ? core.settings.backendTokenTtl : core.settings.accessTokenTtl;
  const now = Math.floor(Date.now() / 1000);
  const base = fhirBase(core);
  const fhirUserUrl = user?.fhirUser ? `${base}/${user.fhirUser}` : undefined;
  const { kid, alg, key } = await core.keys.signingKey();
  const jti = randomUUID();
  const accessToken = await new SignJWT({
    client_id: client.clientId,
    scope: scopes.join(' '),
    ...(context.patient ? { patient: context.patient } : {}),
    ...(context.encounter ? { encounter: context.encounter } : {}),
    ...(fhirUserUrl ? { fhirUser: fhirUserUrl } : {}),
  })
    .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
    .setIssuer(base)
    .setAudience(base)
    .setSubject(user?.id ?? client.clientId)
    .setJti(jti)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    .sign(key);
  const response: TokenResponse = { access_token: accessToken, token_type: 'Bearer', expires_in: ttl, scope: scopes.join(' ') };
  const rows: Array<[string, string, number]> = [[jti, 'access', ttl]];
  const wantsRefresh = !input.backend && (scopes.includes('offline_access') || scopes.includes('online_access'));
  if (wantsRefresh) {
    const refresh = randomToken();
    const refreshTtl = scopes.includes('offline_access') ? core.settings.offlineRefreshTtl : core.settings.onlineRefreshTtl;
    rows.push([sha256(refresh), 'refresh', refreshTtl]);
    response.refresh_token = refresh;
  }
  if (scopes.includes('openid') && user) {
    response.id_token = await new SignJWT({
      ...(scopes.includes('fhirUser') && fhirUserUrl ? { fhirUser: fhirUserUrl } : {}),
      ...(scopes.includes('profile') ? { preferred_username: user.username } : {}),
    })
      .setProtectedHeader({ alg, kid, typ: 'JWT' })
      .setIssuer(base)
      .setAudience(client.clientId)
      .setSubject(user.id)
      .setIssuedAt(now)
      .setExpirationTime(now + core.settings.accessTokenTtl)
      .sign(key);
  }
  for (const [id, kind, rowTtl] of rows) {
    await q.query(
      `INSERT INTO smart_token (id, kind, client_id, user_id, scope, context, family, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))`,
      [id, kind, client.clientId, user?.id ?? null, scopes.join(' '), JSON.stringify(context), input.family, rowTtl],
    );
  }
  if (context.patient) response.patient = context.patient;
  if (context.encounter) response.encounter = context.encounter;
  if (!input.backend) {
    response.need_patient_banner = context.needPatientBanner ?? true;
    response.smart_style_url = authUrl(core, 'smart-style.json');
  }
  return response;
}

/** Verifies signature, issuer, audience, type and expiry, then that the token was not revoked. */
export async function verifyAccessToken(core: SmartCore, token: string): Promise<AccessClaims> {
  const base = fhirBase(core);
  const { payload } = await jwtVerify<AccessClaims>(token, core.keys.resolve, {
    issuer: base,
    audience: base,
    typ: 'at+jwt',
    algorithms: ALGS,
    requiredClaims: ['jti', 'exp', 'client_id', 'scope'],
  });
  const r = await core.db.query<{ revoked: boolean }>("SELECT revoked FROM smart_token WHERE id = $1 AND kind = 'access'", [payload.jti]);
  if (!r.rows[0]) throw new Error('token is not known to this server');
  if (r.rows[0].revoked) throw new Error('token was revoked');
  return payload;
}

export async function revokeFamily(q: Queryable, family: string): Promise<number> {
  const r = await q.query('UPDATE smart_token SET revoked = true WHERE family = $1 AND NOT revoked', [family]);
  return r.rowCount;
}

/** refresh_token grant: rotation, reuse detection, scope narrowing only. */
export async function refreshTokens(core: SmartCore, client: Client, refreshToken: string, scope: string | undefined): Promise<TokenResponse> {
  const id = sha256(refreshToken);
  const result = await core.db.transaction(async (tx): Promise<TokenResponse | ReuseDetected> => {
    const r = await tx.query<TokenRow>("SELECT * FROM smart_token WHERE id = $1 AND kind = 'refresh' FOR UPDATE", [id]);
    const row = r.rows[0];
    if (!row) throw new OAuthError('invalid_grant', 'refresh_token is not known to this server');
    if (row.client_id !== client.clientId) throw new OAuthError('invalid_grant', 'refresh_token was issued to another client');
    if (row.revoked) throw new OAuthError('invalid_grant', 'refresh_token was revoked');
    if (row.rotated_at) {
      // Reuse of a rotated token: someone holds a copy. Revoke everything of this grant (RFC 9700 §4.14.2).
      // Returned, not thrown: the revocation must commit.
      const n = await revokeFamily(tx, row.family);
      return new ReuseDetected(row.family, n, row.client_id, ctxOf(row).patient);
    }
    if (row.expires_at.getTime() < Date.now()) throw new OAuthError('invalid_grant', 'refresh_token has expired');
    let granted = row.scope;
    if (scope) {
      const beyond = uncoveredScopes(scope, row.scope);
      if (beyond.length) throw new OAuthError('invalid_scope', `scope beyond the original grant: ${beyond.join(' ')}`);
      granted = scope;
    }
    await tx.query('UPDATE smart_token SET rotated_at = now() WHERE id = $1', [id]);
    return issueTokens(core, { client, userId: row.user_id ?? undefined, scope: granted, context: ctxOf(row), family: row.family }, tx);
  });
  if (result instanceof ReuseDetected) throw result;
  return result;
}

/** Raised (after the revocation committed) when a rotated refresh token is presented again. */
export class ReuseDetected extends ConfluxError {
  constructor(
    readonly family: string,
    readonly revoked: number,
    readonly clientId: string,
    readonly patient?: string,
  ) {
    super('token-reuse', 'refresh_token was already used');
  }
}

/** The stored row for an access token (JWT: by jti) or a refresh token (by hash), if any. */
async function findToken(core: SmartCore, token: string): Promise<{ row: TokenRow; claims?: AccessClaims } | undefined> {
  if (token.split('.').length === 3) {
    try {
      const { payload } = await jwtVerify<AccessClaims>(token, core.keys.resolve, { issuer: fhirBase(core), typ: 'at+jwt', algorithms: ALGS });
      const r = await core.db.query<TokenRow>("SELECT * FROM smart_token WHERE id = $1 AND kind = 'access'", [payload.jti]);
      return r.rows[0] ? { row: r.rows[0], claims: payload } : undefined;
    } catch {
      return undefined;
    }
  }
  const r = await core.db.query<TokenRow>("SELECT * FROM smart_token WHERE id = $1 AND kind = 'refresh'", [sha256(token)]);
  return r.rows[0] ? { row: r.rows[0] } : undefined;
}

/** RFC 7662 answer; `onlyClient` limits it to that client's own tokens (others read as inactive). */
export async function introspect(core: SmartCore, token: string, onlyClient?: string): Promise<Record<string, unknown>> {
  const found = await findToken(core, token);
  if (!found) return { active: false };
  const { row, claims } = found;
  const active = !row.revoked && row.expires_at.getTime() > Date.now() && !row.rotated_at;
  if (!active || (onlyClient && row.client_id !== onlyClient)) return { active: false };
  const ctx = ctxOf(row);
  const user = row.user_id ? await findUser(core.db, row.user_id) : undefined;
  return {
    active: true,
    scope: row.scope,
    client_id: row.client_id,
    token_type: row.kind === 'access' ? 'Bearer' : 'refresh_token',
    exp: Math.floor(row.expires_at.getTime() / 1000),
    iat: Math.floor(row.issued_at.getTime() / 1000),
    iss: fhirBase(core),
    ...(row.kind === 'access' ? { aud: fhirBase(core), jti: claims?.jti } : {}),
    sub: row.user_id ?? row.client_id,
    ...(user ? { username: user.username } : {}),
    ...(user?.fhirUser ? { fhirUser: `${fhirBase(core)}/${user.fhirUser}` } : {}),
    ...(ctx.patient ? { patient: ctx.patient } : {}),
    ...(ctx.encounter ? { encounter: ctx.encounter } : {}),
  };
}

/** RFC 7009: revoking a refresh token ends its grant (every token of the family); an access token, itself. */
export async function revokeToken(core: SmartCore, token: string, clientId: string): Promise<{ revoked: number; patient?: string }> {
  const found = await findToken(core, token);
  if (!found || found.row.client_id !== clientId) return { revoked: 0 };
  const { row } = found;
  if (row.kind === 'refresh') return { revoked: await revokeFamily(core.db, row.family), patient: ctxOf(row).patient };
  const r = await core.db.query('UPDATE smart_token SET revoked = true WHERE id = $1 AND NOT revoked', [row.id]);
  return { revoked: r.rowCount, patient: ctxOf(row).patient };
}
