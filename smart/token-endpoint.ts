/** /auth/token (authorization_code, refresh_token, client_credentials), /auth/introspect (RFC 7662), /auth/revoke (RFC 7009). */
import { createHash, randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import { authenticateClient, type AuthenticatedClient } from './client-auth.js';
import { OAuthError, type SmartCore } from './core.js';
import { parseScopes, ScopeError, scopeList, uncoveredScopes } from './scopes.js';
import { safeEqual, sha256 } from './secrets.js';
import { introspect, issueTokens, refreshTokens, ReuseDetected, revokeFamily, revokeToken, type GrantContext, type TokenResponse } from './tokens.js';

const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;

interface CodeRow {
  client_id: string;
  redirect_uri: string;
  code_challenge: string;
  scope: string;
  user_id: string | null;
  context: GrantContext | string;
  family: string;
  expires_at: Date;
  used_at: Date | null;
}

function noStore(res: Response): Response {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Pragma', 'no-cache');
  return res;
}

/** Browser-based (public) SMART apps call the token endpoint cross-origin. */
function cors(req: Request, res: Response, next: NextFunction) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type');
  res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
  if (req.method === 'OPTIONS') return void res.status(204).end();
  next();
}

function formBody(req: Request): URLSearchParams {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new OAuthError('invalid_request', 'the body must be application/x-www-form-urlencoded');
  }
  const form = new URLSearchParams(typeof req.body === 'string' ? req.body : '');
  // RFC 6749 §3.2: parameters must not be repeated.
  const seen = new Set<string>();
  for (const [k] of form) {
    if (seen.has(k)) throw new OAuthError('invalid_request', `parameter "${k}" is repeated`);
    seen.add(k);
  }
  return form;
}

async function authorizationCode(core: SmartCore, form: URLSearchParams, auth: AuthenticatedClient): Promise<TokenResponse> {
  const code = form.get('code');
  if (!code) throw new OAuthError('invalid_request', 'code is missing');
  const verifier = form.get('code_verifier');
  if (!verifier) throw new OAuthError('invalid_request', 'code_verifier is missing (PKCE is required)');
  // Single use, atomically: a second redemption finds used_at set.
  const r = await core.db.query<CodeRow>(
    'UPDATE smart_code SET used_at = now() WHERE code_hash = $1 AND used_at IS NULL RETURNING *',
    [sha256(code)],
  );
  const row = r.rows[0];
  if (!row) {
    const used = await core.db.query<{ family: string; client_id: string }>('SELECT family, client_id FROM smart_code WHERE code_hash = $1', [sha256(code)]);
    if (used.rows[0]) {
      const n = await revokeFamily(core.db, used.rows[0].family);
      await core.audit({ action: 'code-reused', success: false, clientId: used.rows[0].client_id, detail: `authorization code presented again; ${n} token(s) issued from it revoked` });
      throw new OAuthError('invalid_grant', 'code was already used; the tokens issued from it have been revoked');
    }
    throw new OAuthError('invalid_grant', 'code is not known to this server');
  }
  if (row.expires_at.getTime() < Date.now()) throw new OAuthError('invalid_grant', 'code has expired');
  if (row.client_id !== auth.client.clientId) throw new OAuthError('invalid_grant', 'code was issued to another client');
  if (form.get('redirect_uri') !== row.redirect_uri) throw new OAuthError('invalid_grant', 'redirect_uri does not match the one of the authorization request');
  if (!VERIFIER.test(verifier)) throw new OAuthError('invalid_grant', 'code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  if (!safeEqual(challenge, row.code_challenge)) throw new OAuthError('invalid_grant', 'code_verifier does not match the code_challenge (PKCE S256)');
  const context = typeof row.context === 'string' ? (JSON.parse(row.context) as GrantContext) : row.context;
  return issueTokens(core, { client: auth.client, userId: row.user_id ?? undefined, scope: row.scope, context, family: row.family });
}

async function clientCredentials(core: SmartCore, form: URLSearchParams, auth: AuthenticatedClient): Promise<TokenResponse> {
  if (auth.method !== 'private_key_jwt') {
    throw new OAuthError('unauthorized_client', 'client_credentials needs private_key_jwt client authentication (SMART Backend Services)');
  }
  const scope = form.get('scope') ?? '';
  if (!scope.trim()) throw new OAuthError('invalid_scope', 'scope is required (e.g. system/*.rs)');
  let parsed;
  try {
    parsed = parseScopes(scope);
  } catch (e) {
    if (e instanceof ScopeError) throw new OAuthError('invalid_scope', e.message);
    throw e;
  }
  if (parsed.special.size || parsed.clinical.some((s) => s.context !== 'system')) {
    throw new OAuthError('invalid_scope', 'client_credentials grants only system/ scopes');
  }
  const beyond = uncoveredScopes(scope, auth.client.scope);
  if (beyond.length) throw new OAuthError('invalid_scope', `scope not registered for this client: ${beyond.join(' ')}`);
  return issueTokens(core, { client: auth.client, scope: scopeList(scope).join(' '), context: {}, family: randomUUID(), backend: true });
}

export function tokenRoutes(core: SmartCore): express.Router {
  const r = express.Router();
  const text = express.text({ type: 'application/x-www-form-urlencoded', limit: '64kb' });

  const fail = async (req: Request, res: Response, err: unknown, clientId?: string) => {
    if (!(err instanceof OAuthError)) throw err;
    for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
    noStore(res).status(err.status).json({ error: err.error, error_description: err.description });
  };

  r.options(['/auth/token', '/auth/revoke'], cors);

  r.post('/auth/token', cors, text, async (req, res) => {
    let clientId: string | undefined;
    const grantType = typeof req.body === 'string' ? new URLSearchParams(req.body).get('grant_type') : undefined;
    try {
      const form = formBody(req);
      const auth = await authenticateClient(core, req.headers.authorization, form);
      clientId = auth.client.clientId;
      let tokens: TokenResponse;
      switch (form.get('grant_type')) {
        case 'authorization_code':
          tokens = await authorizationCode(core, form, auth);
          break;
        case 'refresh_token': {
          const refresh = form.get('refresh_token');
          if (!refresh) throw new OAuthError('invalid_request', 'refresh_token is missing');
          try {
            tokens = await refreshTokens(core, auth.client, refresh, form.get('scope') ?? undefined);
          } catch (e) {
            if (!(e instanceof ReuseDetected)) throw e;
            await core.audit({ action: 'refresh-reused', success: false, clientId, patient: e.patient, detail: `rotated refresh token presented again; ${e.revoked} token(s) of the grant revoked`, ip: req.ip });
            throw new OAuthError('invalid_grant', 'refresh_token was already used; every token of this grant has been revoked');
          }
          break;
        }
        case 'client_credentials':
          tokens = await clientCredentials(core, form, auth);
          break;
        case null:
          throw new OAuthError('invalid_request', 'grant_type is missing');
        default:
          throw new OAuthError('unsupported_grant_type', `grant_type "${form.get('grant_type')}" is not supported`);
      }
      // No token leaves without its audit record.
      await core.audit({ action: 'token-issued', success: true, clientId, patient: tokens.patient, detail: `${form.get('grant_type')}: ${tokens.scope}`, ip: req.ip });
      noStore(res).json(tokens);
    } catch (err) {
      if (err instanceof OAuthError) {
        // The auditor logged its own failure; a refusal is answered the same whether or not its audit was stored.
        await core
          .audit({ action: 'token-refused', success: false, clientId, detail: `${grantType ?? '(no grant_type)'}: ${err.error}: ${err.description}`, ip: req.ip })
          .catch(() => undefined);
      }
      await fail(req, res, err, clientId);
    }
  });

  r.post('/auth/introspect', text, async (req, res) => {
    try {
      const form = formBody(req);
      // Resource servers are confidential clients; a client sees only its own tokens.
      const auth = await authenticateClient(core, req.headers.authorization, form);
      if (auth.method === 'none') throw new OAuthError('invalid_client', 'introspection needs an authenticated (confidential) client', 401);
      const token = form.get('token');
      if (!token) throw new OAuthError('invalid_request', 'token is missing');
      noStore(res).json(await introspect(core, token, auth.client.clientId));
    } catch (err) {
      await fail(req, res, err);
    }
  });

  r.post('/auth/revoke', cors, text, async (req, res) => {
    try {
      const form = formBody(req);
      const auth = await authenticateClient(core, req.headers.authorization, form);
      const token = form.get('token');
      if (!token) throw new OAuthError('invalid_request', 'token is missing');
      const { revoked, patient } = await revokeToken(core, token, auth.client.clientId);
      if (revoked) await core.audit({ action: 'token-revoked', success: true, clientId: auth.client.clientId, patient, detail: `${revoked} token(s) revoked`, ip: req.ip });
      // RFC 7009 §2.2: 200 whether or not the token was valid.
      noStore(res).status(200).end();
    } catch (err) {
      await fail(req, res, err);
    }
  });
  return r;
}
